/**
 * Defence in depth: no secret values in an audit record's `details`. Callers must not put secrets in an audit
 * entry at all; this only catches the obvious mistakes.
 */
import { maskSecrets } from "@altan/domain/Secret"
import * as Redacted from "effect/Redacted"

/** What replaces a sensitive value in `details`. */
export const redacted = "<redacted>"

const sensitiveNames = new Set([
  "authorization",
  "proxyauthorization",
  "password",
  "passwd",
  "passphrase",
  "secret",
  "token",
  "apikey",
  "value",
  "cookie",
  "setcookie",
  "privatekey",
  "credential",
  "credentials",
  "bearer"
])
const sensitiveSuffixes = ["password", "secret", "token", "apikey", "privatekey", "authorization", "credentials"]

/**
 * Whether a key of `details` names a secret, whatever its case and separators: `authorization`, `password`,
 * `secret`, `token`, `api_key`, `value`, `cookie`, `private_key`, `credentials`, and any key ending in one of
 * them (`client_secret`, `access_token`, `x-api-key`). `secret_name` or `prompt_tokens` are kept.
 */
export const isSensitiveKey = (key: string): boolean => {
  const name = key.toLowerCase().replace(/[^a-z0-9]/g, "")
  return sensitiveNames.has(name) || sensitiveSuffixes.some((suffix) => name.endsWith(suffix))
}

/** Strings that are credentials whatever their key: `Bearer ...` / `Basic ...` headers and JWTs. */
const looksLikeCredential = (text: string) =>
  /^(?:bearer|basic)\s+\S/i.test(text) || /^eyJ[\w-]*\.eyJ[\w-]*\./.test(text)

const maxDepth = 8

/**
 * `details` as plain JSON data, with every value under a sensitive key (`isSensitiveKey`), every `Redacted`
 * and every string that looks like a credential replaced by `"<redacted>"`, and credential-shaped parts of other
 * strings masked (`maskSecrets`), at any depth. Callers must not
 * put secrets in an audit entry at all; this only catches the obvious mistakes. Dates become ISO strings,
 * bigints strings, non-finite numbers `null`; functions, symbols and `undefined` are dropped, cycles and
 * nesting deeper than 8 become `"<circular>"` / `"<truncated>"`, so the record hashes the same once parsed back.
 */
export const sanitizeDetails = (details: Readonly<Record<string, unknown>>): Record<string, unknown> =>
  sanitizeObject(details, 0, new Set()) as Record<string, unknown>

const sanitizeValue = (value: unknown, depth: number, seen: Set<object>): unknown => {
  switch (typeof value) {
    case "string":
      // a whole value that is a credential goes; one inside text (an upstream's echo) is masked in place
      return looksLikeCredential(value) ? redacted : maskSecrets(value)
    case "number":
      return Number.isFinite(value) ? value : null
    case "boolean":
      return value
    case "bigint":
      return value.toString()
    case "object":
      break
    default:
      return undefined
  }
  if (value === null) return null
  if (Redacted.isRedacted(value)) return redacted
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString()
  if (seen.has(value)) return "<circular>"
  if (depth >= maxDepth) return "<truncated>"
  seen.add(value)
  const result = Array.isArray(value)
    ? value.map((item) => sanitizeValue(item, depth + 1, seen) ?? null)
    : sanitizeObject(value as Record<string, unknown>, depth + 1, seen)
  seen.delete(value)
  return result
}

const sanitizeObject = (value: Readonly<Record<string, unknown>>, depth: number, seen: Set<object>) => {
  const result: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const clean = isSensitiveKey(key) ? redacted : sanitizeValue(value[key], depth, seen)
    if (clean !== undefined) result[key] = clean
  }
  return result
}
