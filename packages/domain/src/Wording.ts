/**
 * The schema library's refusal messages in the API's own words: what to send, and what came (`Expected string, actual
 * 42` -> `must be a string (got 42)`). Messages that are already ours (a refinement's) are kept as written.
 */

/** A value as a refusal quotes it: short. */
export const shown = (actual: string) => (actual.length > 60 ? `${actual.slice(0, 57)}...` : actual)

/** What the schema expected, in the API's words (`Expected string` -> `a string`); none for an optional's `undefined`. */
export const expectedOf = (expected: string): string | undefined => {
  if (expected === "undefined") return undefined
  const words: Record<string, string> = {
    string: "a string",
    number: "a number",
    boolean: "true or false",
    object: "an object",
    "an integer": "a whole number",
    null: "null"
  }
  if (words[expected] !== undefined) return words[expected]
  if (expected.startsWith("{")) return "an object"
  if (expected.startsWith("ReadonlyArray<") || expected.startsWith("readonly ")) return "an array"
  return expected
}

/** One decode message in the API's words: `must be ... (got ...)`, `is required`, `is not a field of this request`. */
export const reworded = (message: string): string => {
  if (message === "is missing") return "is required"
  if (message === "is unexpected") return "is not a field of this request"
  const unexpected = /^is unexpected, expected: (.+)$/s.exec(message)
  if (unexpected) {
    return `is not a field of this request (its fields: ${unexpected[1]!.replace(/"/g, "").split(" | ").join(", ")})`
  }
  const match = /^Expected (.+?)(?:, actual (.+))?$/s.exec(message)
  if (match === null) return message
  const [, expected, actual] = match
  const got = actual !== undefined ? ` (got ${shown(actual)})` : ""
  const size = /^an array of (at least|at most) (\d+) item\(s\)$/.exec(expected!)
  if (size) return `must have ${size[1]} ${size[2]} item${size[2] === "1" ? "" : "s"}${got}`
  const length = /^a string (at least|at most) (\d+) character\(s\) long$/.exec(expected!)
  if (length) return `must be ${length[1]} ${length[2]} character${length[2] === "1" ? "" : "s"} long${got}`
  const between = /^a number between (.+) and (.+)$/.exec(expected!)
  if (between) return `must be between ${between[1]} and ${between[2]}${got}`
  return `must be ${expectedOf(expected!) ?? "absent"}${got}`
}
