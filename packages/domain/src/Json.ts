/**
 * Deterministic JSON: object keys sorted (by UTF-16 code units), no whitespace, numbers and strings as
 * `JSON.stringify` writes them; `undefined`, functions and symbols are dropped from objects and are `null` in
 * arrays, like `JSON.stringify`. For JSON data this is the JSON Canonicalization Scheme (RFC 8785).
 */
export const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null"
  if (Array.isArray(value)) {
    return `[${value.map((item) => (isJsonless(item) ? "null" : canonicalJson(item))).join(",")}]`
  }
  const object = value as Record<string, unknown>
  const keys = Object.keys(object).filter((key) => !isJsonless(object[key])).sort()
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(object[key])}`).join(",")}}`
}

const isJsonless = (value: unknown) => value === undefined || typeof value === "function" || typeof value === "symbol"
