/**
 * Deterministic JSON: object keys sorted (by UTF-16 code units), no whitespace, numbers and strings as
 * `JSON.stringify` writes them; `undefined`, functions and symbols are dropped from objects and are `null` in
 * arrays, like `JSON.stringify`. For JSON data this is the JSON Canonicalization Scheme (RFC 8785).
 */
export const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null"
  // one string built in place: it hashes every audit record, on the path of every third-party request
  if (Array.isArray(value)) {
    let out = "["
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      out += (i === 0 ? "" : ",") + (isJsonless(item) ? "null" : canonicalJson(item))
    }
    return out + "]"
  }
  const object = value as Record<string, unknown>
  const keys = Object.keys(object).sort()
  let out = "{"
  for (const key of keys) {
    const item = object[key]
    if (isJsonless(item)) continue
    out += (out.length === 1 ? "" : ",") + JSON.stringify(key) + ":" + canonicalJson(item)
  }
  return out + "}"
}

const isJsonless = (value: unknown) => value === undefined || typeof value === "function" || typeof value === "symbol"
