import * as Either from "effect/Either"
import * as Schema from "effect/Schema"

/** What every answer of the demo model starts with: it is a script, not a language model. */
export const marker = "[demo model] "

/** The part of an OpenAI chat-completions request the rules read. */
const Message = Schema.Struct({
  role: Schema.String,
  content: Schema.optional(Schema.NullOr(Schema.Unknown)),
  tool_call_id: Schema.optional(Schema.String),
  tool_calls: Schema.optional(Schema.Array(Schema.Struct({
    id: Schema.String,
    function: Schema.Struct({ name: Schema.String })
  })))
})
type Message = typeof Message.Type

export const ChatRequest = Schema.Struct({
  model: Schema.optional(Schema.String),
  messages: Schema.Array(Message).pipe(Schema.minItems(1)),
  tools: Schema.optional(Schema.Array(Schema.Struct({ function: Schema.Struct({ name: Schema.String }) })))
})
export type ChatRequest = typeof ChatRequest.Type

/** One step of the script: a tool to call with its arguments, or an answer. */
type Move =
  | { readonly _tag: "Call"; readonly name: string; readonly arguments: Record<string, unknown> }
  | { readonly _tag: "Answer"; readonly content: string }

/** `json-extract` -> `json.extract`: function names are tool ids with `.` spelled `-`. */
const toolIdOf = (name: string) => name.replace(/-/g, ".")

const textOf = (content: unknown): string =>
  typeof content === "string"
    ? content
    : Array.isArray(content)
    ? content.map((part) => (typeof part?.text === "string" ? part.text : "")).join("")
    : ""

/** The first JSON object or array in `text` (the longest that parses), and where it is. */
const findJson = (
  text: string
): { readonly value: unknown; readonly start: number; readonly end: number } | undefined => {
  const start = text.search(/[{[]/)
  if (start === -1) return undefined
  const closer = text[start] === "{" ? "}" : "]"
  let end = text.lastIndexOf(closer)
  for (let tries = 0; end > start && tries < 20; tries++) {
    try {
      return { value: JSON.parse(text.slice(start, end + 1)), start, end: end + 1 }
    } catch {
      end = text.lastIndexOf(closer, end - 1)
    }
  }
  return undefined
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const PATH = /[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*|\[-?\d+\])*/g

/** `json.extract`: the document in the message, and the path it names (`path a.b`, else a word naming a key). */
const jsonExtract = (text: string): Record<string, unknown> | undefined => {
  const found = findJson(text)
  if (found === undefined) return undefined
  const rest = text.slice(0, found.start) + " " + text.slice(found.end)
  const explicit = /\bpath\s*[:=]?\s*[`"']?([$\w.[\]-]+)/i.exec(rest)?.[1]
  const keys = isRecord(found.value) ? Object.keys(found.value) : []
  const named = (rest.match(PATH) ?? []).find((word) => keys.includes(word.split(/[.[]/)[0]!))
  return { json: found.value, path: explicit ?? named ?? keys[0] ?? "$" }
}

const HEADER = /(?:^|\s)(?:From|Subject):[ \t]/i

/** `email.parse`: the message from its first `From:` or `Subject:` header on. */
const emailParse = (text: string): Record<string, unknown> | undefined => {
  const match = HEADER.exec(text)
  if (match === null) return undefined
  return { raw: text.slice(match.index + match[0].length - match[0].trimStart().length) }
}

const DATE_WORDS = new RegExp(
  "\\d|\\b(?:now|today|tonight|tomorrow|yesterday|next|last|ago|noon|midnight|" +
    "monday|tuesday|wednesday|thursday|friday|saturday|sunday|" +
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:tember)?|oct(?:ober)?|" +
    "nov(?:ember)?|dec(?:ember)?)\\b",
  "i"
)

/** `datetime.parse`: the message when it states a date or time, else `now`. */
const datetimeParse = (text: string): Record<string, unknown> => ({ text: DATE_WORDS.test(text) ? text : "now" })

const QUOTED_TEMPLATE = /(["'`])((?:(?!\1).)*\{\{(?:(?!\1).)*)\1/s

/**
 * `text.template`: a quoted template with `{{placeholders}}` and their `name=value` (or `name: value`) in the
 * message; else a greeting of the first capitalised word after the keyword ("Say hello to Ada": Ada), or the world.
 */
const textTemplate = (text: string, afterKeyword: number): Record<string, unknown> => {
  const quoted = QUOTED_TEMPLATE.exec(text)
  if (quoted !== null) {
    const template = quoted[2]!
    const rest = text.slice(0, quoted.index) + " " + text.slice(quoted.index + quoted[0].length)
    const variables: Record<string, string> = {}
    for (const [, name] of template.matchAll(/\{\{\s*([\w.]+)\s*\}\}/g)) {
      const escaped = name!.replace(/[.$]/g, "\\$&")
      const value = new RegExp(`\\b${escaped}\\s*[=:]\\s*(?:"([^"]*)"|'([^']*)'|([^\\s,;]+))`).exec(rest)
      if (value !== null) variables[name!] = value[1] ?? value[2] ?? value[3]!
    }
    return { template, variables }
  }
  const name = /\b([A-Z][A-Za-z'-]*)\b/.exec(text.slice(afterKeyword))?.[1]
  return { template: "Hello, {{name}}!", variables: { name: name ?? "world" } }
}

/** The script's rules: a keyword of the user's message, and the arguments derived from it. */
const rules: ReadonlyArray<{
  readonly tool: string
  readonly keyword: RegExp
  /** The arguments the message gives (`afterKeyword`: where the keyword ends in it), if any. */
  readonly args: (text: string, afterKeyword: number) => Record<string, unknown> | undefined
}> = [
  { tool: "email-parse", keyword: HEADER, args: emailParse },
  { tool: "json-extract", keyword: /\b(?:json|extract)\b/i, args: jsonExtract },
  { tool: "datetime-parse", keyword: /\b(?:time|date|day|when|today|tomorrow|yesterday)\b/i, args: datetimeParse },
  { tool: "text-template", keyword: /\b(?:template|hello|greet)\b/i, args: textTemplate }
]

const noRule = marker +
  "I am Altan's scripted demo model, not a real LLM, and your message matched none of my rules. I call one tool " +
  "when you ask me to extract a value from JSON (json.extract, with the JSON in the message), to parse an email " +
  "(email.parse, with its From: or Subject: header in the message), about a date or time (datetime.parse), or to " +
  "fill a template or say hello (text.template). Configure a real LLM for anything else."

/** What the tool results at the end of the conversation say, as a final answer. */
const answerResults = (messages: ReadonlyArray<Message>): string => {
  const results: Array<Message> = []
  for (let i = messages.length - 1; i >= 0 && messages[i]!.role === "tool"; i--) results.unshift(messages[i]!)
  const names = new Map<string, string>()
  for (const message of messages) {
    for (const call of message.tool_calls ?? []) names.set(call.id, toolIdOf(call.function.name))
  }
  const lines = results.map((result) => {
    const tool = names.get(result.tool_call_id ?? "") ?? "the tool"
    const content = textOf(result.content)
    let parsed: unknown
    try {
      parsed = JSON.parse(content)
    } catch {
      return `I called ${tool}; it returned ${content}`
    }
    if (isRecord(parsed) && "output" in parsed) return `I called ${tool}; it returned ${JSON.stringify(parsed.output)}`
    if (isRecord(parsed) && isRecord(parsed.error)) {
      return `I called ${tool}; it failed (${String(parsed.error.code)}): ${String(parsed.error.message)}`
    }
    return `I called ${tool}; it returned ${content}`
  })
  return marker + lines.join("\n")
}

/**
 * The script: after tool results, an answer saying what they were; otherwise one tool call, of the rule whose keyword
 * comes first in the user's last message among those whose tool is offered and whose arguments the message gives;
 * otherwise an answer saying what the script can do. Deterministic: the same request gets the same move.
 */
export const move = (request: ChatRequest): Move => {
  const last = request.messages[request.messages.length - 1]!
  if (last.role === "tool") return { _tag: "Answer", content: answerResults(request.messages) }
  const user = [...request.messages].reverse().find((m) => m.role === "user")
  const text = textOf(user?.content)
  const offered = new Set((request.tools ?? []).map((t) => t.function.name))
  // the rule whose keyword comes first in the message ("fill the template ... when" is a template)
  const matches = rules.flatMap((rule) => {
    const keyword = offered.has(rule.tool) ? rule.keyword.exec(text) : null
    return keyword === null ? [] : [{ rule, at: keyword.index, after: keyword.index + keyword[0].length }]
  }).sort((a, b) => a.at - b.at)
  for (const { after, rule } of matches) {
    const args = rule.args(text, after)
    if (args !== undefined) return { _tag: "Call", name: rule.tool, arguments: args }
  }
  return { _tag: "Answer", content: noRule }
}

const tokensOf = (text: string) => Math.ceil(text.length / 4)

/** The chat completion answering `body` (an OpenAI chat-completions request), or why it is not one. */
export const complete = (body: unknown): Either.Either<unknown, string> =>
  Either.map(
    Either.mapLeft(Schema.decodeUnknownEither(ChatRequest)(body), () => "not a chat-completions request"),
    (request) => {
      const next = move(request)
      const turn = request.messages.filter((m) => m.role === "assistant").length + 1
      const message = next._tag === "Answer"
        ? { role: "assistant", content: next.content }
        : {
          role: "assistant",
          content: `${marker}Calling ${toolIdOf(next.name)}.`,
          tool_calls: [{
            id: `call_demo_${turn}`,
            type: "function",
            function: { name: next.name, arguments: JSON.stringify(next.arguments) }
          }]
        }
      const prompt = tokensOf(JSON.stringify(request.messages))
      const completion = tokensOf(JSON.stringify(message))
      return {
        id: `chatcmpl-demo-${turn}`,
        object: "chat.completion",
        created: 0,
        model: "altan-demo",
        choices: [{
          index: 0,
          message,
          finish_reason: next._tag === "Answer" ? "stop" : "tool_calls",
          logprobs: null
        }],
        usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
      }
    }
  )
