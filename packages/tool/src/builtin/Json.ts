import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { describeType, excerpt, isRecord, messageOf, ownValue } from "./internal.js"

const TOOL_ID = "json.extract"

// Schema.Unknown alone also accepts a missing key; JSON has no undefined, so require presence.
const Present = Schema.Unknown.pipe(
  Schema.filter((value) => value !== undefined, { message: () => "is missing", jsonSchema: {} })
)

export const JsonExtractInput = Schema.Struct({
  json: Present.annotations({
    description: "The document: any JSON value, or a string containing JSON text (a string is always parsed)."
  }),
  path: Schema.String.annotations({
    description: "Where to read, in dot/bracket notation: \"a.b[0].c\", \"items[2]\", \"items[-1]\" (last), " +
      "\"a[\\\"key with.dots\\\"]\", optionally prefixed by \"$.\"; \"$\" or \"\" is the whole document."
  }),
  default: Schema.optionalWith(
    Schema.Unknown.annotations({
      description: "Returned (with found: false) instead of failing when the path is missing."
    }),
    { exact: true }
  )
})
export type JsonExtractInput = typeof JsonExtractInput.Type

export const JsonExtractOutput = Schema.Struct({
  value: Schema.Unknown.annotations({ description: "The value at the path, or `default` when it is missing." }),
  found: Schema.Boolean.annotations({ description: "false when the path is missing and `default` was returned." })
})
export type JsonExtractOutput = typeof JsonExtractOutput.Type

type Segment =
  | { readonly _tag: "Key"; readonly key: string }
  | { readonly _tag: "Index"; readonly index: number }

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/** `a.b[0]`-style rendering of the first segments, for error messages. */
const render = (segments: ReadonlyArray<Segment>): string =>
  segments.reduce((acc, s) => {
    if (s._tag === "Index") return `${acc}[${s.index}]`
    if (IDENT.test(s.key) || /^\d+$/.test(s.key)) return acc === "" ? s.key : `${acc}.${s.key}`
    return `${acc}[${JSON.stringify(s.key)}]`
  }, "")

/** Parses `$.a.b[0]["c.d"]`; the error names the offending position. */
export const parsePath = (path: string): Either.Either<Array<Segment>, string> => {
  const text = path.trim()
  const segments: Array<Segment> = []
  let i = text.startsWith("$") ? 1 : 0
  const invalid = (why: string) => Either.left(`invalid path ${excerpt(path)}: ${why} at position ${i}`)
  // Without "$" the first key needs no leading dot ("a.b"); after it, a key must follow a dot.
  let needDot = i === 1
  while (i < text.length) {
    const c = text[i]
    if (c === "[") {
      const close = text.indexOf("]", i)
      const inner = close === -1 ? "" : text.slice(i + 1, close).trim()
      if (/^-?\d+$/.test(inner)) {
        segments.push({ _tag: "Index", index: Number(inner) })
        i = close + 1
      } else if (/^(["'])/.test(inner)) {
        // A quoted key may itself contain "]", so scan for the closing quote.
        const quote = inner[0]!
        let j = text.indexOf(quote, i) + 1
        let key = ""
        while (j < text.length && text[j] !== quote) {
          if (text[j] === "\\" && j + 1 < text.length) j++
          key += text[j]
          j++
        }
        const end = /^\s*\]/.exec(text.slice(j + 1))
        if (j >= text.length || !end) return invalid("unterminated quoted key")
        segments.push({ _tag: "Key", key })
        i = j + 1 + end[0].length
      } else {
        return invalid("expected an index like [0] or a quoted key like [\"name\"]")
      }
      needDot = true
    } else if (c === "." || !needDot) {
      if (c === ".") i++
      const match = /^[^.[\]]+/.exec(text.slice(i))
      if (!match) return invalid("expected a key")
      segments.push({ _tag: "Key", key: match[0].trim() })
      i += match[0].length
      needDot = true
    } else {
      return invalid(`unexpected ${JSON.stringify(c)}`)
    }
  }
  return Either.right(segments)
}

/** Follows the path through own properties only; the error says where and why it stopped. */
export const extract = (
  root: unknown,
  segments: ReadonlyArray<Segment>,
  path: string
): Either.Either<unknown, string> => {
  let current = root
  for (let n = 0; n < segments.length; n++) {
    const segment = segments[n]!
    const at = n === 0 ? "the root" : render(segments.slice(0, n))
    const missing = (why: string) => Either.left(`path ${path} not found (${why})`)
    if (Array.isArray(current)) {
      const index = segment._tag === "Index"
        ? segment.index
        : /^-?\d+$/.test(segment.key)
        ? Number(segment.key)
        : undefined
      if (index === undefined) {
        return missing(
          `${at} is an array of ${current.length} items; use an index like ${render(segments.slice(0, n))}[0]`
        )
      }
      const resolved = index < 0 ? current.length + index : index
      if (resolved < 0 || resolved >= current.length) {
        return missing(`${at} has ${current.length} item${current.length === 1 ? "" : "s"}`)
      }
      current = current[resolved]
    } else if (isRecord(current)) {
      const key = segment._tag === "Key" ? segment.key : String(segment.index)
      const found = ownValue(current, key)
      if (found === undefined) {
        const keys = Object.keys(current)
        const listed = keys.length === 0
          ? "it is empty"
          : `keys: ${keys.slice(0, 20).map((k) => JSON.stringify(k)).join(", ")}${keys.length > 20 ? ", …" : ""}`
        return missing(`${at} has no key ${JSON.stringify(key)}; ${listed}`)
      }
      current = found.value
    } else {
      return missing(`${at} is ${describeType(current)}, not an object or array`)
    }
  }
  return Either.right(current)
}

/** `json.extract`: one value out of a JSON document by path. */
export const JsonExtract: Tool.Tool = Tool.make({
  id: TOOL_ID,
  name: "Extract from JSON",
  description: "Reads one value out of a JSON document by path. `json` is the document (a JSON value, or a " +
    "string of JSON text which is parsed first); `path` uses dot/bracket notation such as \"data.items[0].id\" " +
    "or \"$.user.name\", with negative indices counting from the end; \"$\" returns the whole document. " +
    "Returns { value, found: true }. A missing path fails with a message saying where the path stopped " +
    "matching, unless `default` is given, which is then returned with found: false.",
  input: JsonExtractInput,
  output: JsonExtractOutput,
  run: (input) =>
    Effect.gen(function*() {
      const fail = (message: string) => new ToolFailed({ tool_id: TOOL_ID, message, retryable: false })
      const document = typeof input.json === "string"
        ? yield* Effect.try({
          try: () => JSON.parse(input.json as string) as unknown,
          catch: (error) => fail(`json is a string but not valid JSON: ${messageOf(error)}`)
        })
        : input.json
      const segments = yield* Either.mapLeft(parsePath(input.path), fail)
      const shown = input.path.trim() === "" ? "$" : input.path.trim()
      return yield* Either.match(extract(document, segments, shown), {
        onRight: (value) => Effect.succeed({ value, found: true }),
        onLeft: (message) =>
          input.default !== undefined
            ? Effect.succeed({ value: input.default, found: false })
            : Effect.fail(fail(message))
      })
    })
})
