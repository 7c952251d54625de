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
  let out = text
  for (const value of values) {
    if (value === undefined || value.length < 4) continue
    out = out.split(value).join("<redacted>")
    // the token part of `Bearer <token>` or `<prefix><token>` alone
    const last = value.split(/\s+/).at(-1)
    if (last !== undefined && last !== value && last.length >= 8) out = out.split(last).join("<redacted>")
  }
  for (const shape of credentialShapes) {
    out = out.replace(shape, (match) => {
      const scheme = /^(Bearer|Basic)\s+/i.exec(match)
      return scheme ? `${scheme[1]} <redacted>` : "<redacted>"
    })
  }
  return out
}
