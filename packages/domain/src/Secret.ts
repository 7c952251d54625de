import * as Schema from "effect/Schema"

/** A tenant secret's name, as LLM configs and connections refer to it. */
export const SecretName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, {
    message: () => "secret name must be 1-128 letters, digits, _ . or -"
  })
)

/** Reserved for the runtime's own entries (OAuth2 tokens): a tenant's secret names cannot start with `_`. */
export const isReservedSecretName = (name: string) => name.startsWith("_")

// credential shapes worth masking even when the exact value is not known (bearer tokens, common key formats)
const credentialShapes = [
  /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi,
  /\bsk-[A-Za-z0-9_-]{8,}/g,
  /\bxox[abposre]-[A-Za-z0-9-]{8,}/g,
  /\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g
]

/**
 * Upstream text (an error body, a message) with the given secret values and credential-shaped strings
 * masked: providers sometimes echo the key they were sent, and such text reaches tasks, logs and LLMs.
 */
export const maskSecrets = (text: string, values: ReadonlyArray<string | undefined> = []): string => {
  let out = maskValues(text, values)
  for (const shape of credentialShapes) {
    out = out.replace(shape, (match) => {
      const scheme = /^(Bearer|Basic)\s+/i.exec(match)
      return scheme ? `${scheme[1]} <redacted>` : "<redacted>"
    })
  }
  return out
}

/** `text` with the given secret values (and the token part of `Bearer <token>`-like values) masked. */
export const maskValues = (text: string, values: ReadonlyArray<string | undefined>): string => {
  let out = text
  for (const value of values) {
    if (value === undefined || value.length < 4) continue
    out = out.split(value).join("<redacted>")
    // the token part of `Bearer <token>` or `<prefix><token>` alone
    const last = value.split(/\s+/).at(-1)
    if (last !== undefined && last !== value && last.length >= 8) out = out.split(last).join("<redacted>")
  }
  return out
}

/**
 * A JSON value with the given secret values masked in every string (keys included): what an upstream echoed of
 * the credential it was sent, in an otherwise good answer, must not reach a task's output, its events or an LLM.
 * Works on the serialized text (with the values as JSON escapes them), so depth costs nothing; returns the same
 * value when nothing was masked.
 */
export const maskValuesDeep = <A>(value: A, values: ReadonlyArray<string | undefined>): A => {
  const secrets = values.filter((v): v is string => v !== undefined && v.length >= 4)
  if (secrets.length === 0 || value === undefined) return value
  const text = JSON.stringify(value)
  const masked = maskValues(text, secrets.map((v) => JSON.stringify(v).slice(1, -1)))
  if (masked === text) return value
  try {
    return JSON.parse(masked) as A
  } catch {
    // a value with JSON punctuation in it matched across tokens: mask string by string instead
    const walk = (v: unknown): unknown =>
      typeof v === "string"
        ? maskValues(v, secrets)
        : Array.isArray(v)
        ? v.map(walk)
        : typeof v === "object" && v !== null
        ? Object.fromEntries(Object.entries(v).map(([k, item]) => [maskValues(k, secrets), walk(item)]))
        : v
    return walk(value) as A
  }
}
