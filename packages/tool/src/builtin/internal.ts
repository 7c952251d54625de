/** Helpers shared by the built-in tools. */

/**
 * The value of an own property, or `undefined`. Bracket access would also reach inherited
 * members (`constructor`, `__proto__`, `toString`), which user-supplied paths must never see.
 */
export const ownValue = (target: object, key: string): { readonly value: unknown } | undefined => {
  const descriptor = Object.getOwnPropertyDescriptor(target, key)
  return descriptor && "value" in descriptor ? { value: descriptor.value } : undefined
}

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** "an array", "a string", "null", ... for error messages. */
export const describeType = (value: unknown): string => {
  if (value === null) return "null"
  if (Array.isArray(value)) return "an array"
  if (typeof value === "object") return "an object"
  return typeof value === "undefined" ? "undefined" : `a ${typeof value}`
}

/** Shortens user text quoted in error messages. */
export const excerpt = (text: string, max = 80): string =>
  JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text)

export const messageOf = (error: unknown): string => error instanceof Error ? error.message : String(error)
