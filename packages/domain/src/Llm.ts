import * as Schema from "effect/Schema"
import { ErrorDetails } from "./Errors.js"
import { TaggedError } from "./TaggedError.js"

/** One tool call the model asked for; `arguments` is the parsed JSON object. */
export const ToolCall = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  arguments: Schema.Unknown
})
export type ToolCall = typeof ToolCall.Type

/** A chat message in the session history (the OpenAI chat-completions roles). */
export const ChatMessage = Schema.Union(
  Schema.Struct({ role: Schema.Literal("system"), content: Schema.String }),
  Schema.Struct({ role: Schema.Literal("user"), content: Schema.String }),
  Schema.Struct({
    role: Schema.Literal("assistant"),
    content: Schema.NullOr(Schema.String),
    tool_calls: Schema.optional(Schema.Array(ToolCall))
  }),
  Schema.Struct({ role: Schema.Literal("tool"), tool_call_id: Schema.String, content: Schema.String })
)
export type ChatMessage = typeof ChatMessage.Type

/** A tool as the model sees it: a function with a JSON Schema for its arguments. */
export const FunctionTool = Schema.Struct({
  name: Schema.String,
  description: Schema.String,
  parameters: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type FunctionTool = typeof FunctionTool.Type

/** One try at one LLM, as recorded on the task. */
export const LlmAttempt = Schema.Struct({
  llm_id: Schema.String,
  outcome: Schema.Literal("ok", "retry", "failed", "bad_response", "repaired"),
  error: Schema.optional(Schema.String),
  duration_ms: Schema.Number
})
export type LlmAttempt = typeof LlmAttempt.Type

/** The model's answer to one turn. */
export const Completion = Schema.Struct({
  llm_id: Schema.String,
  content: Schema.NullOr(Schema.String),
  tool_calls: Schema.Array(ToolCall),
  usage: Schema.Struct({ prompt_tokens: Schema.Int, completion_tokens: Schema.Int }),
  attempts: Schema.Array(LlmAttempt)
})
export type Completion = typeof Completion.Type

/** The LLM could not be reached or kept failing, fallbacks included. */
export class LlmUnavailable extends TaggedError<LlmUnavailable>()("LlmUnavailable", {
  message: Schema.String,
  attempts: Schema.Array(LlmAttempt),
  details: Schema.optional(ErrorDetails)
}) {
  get code() {
    return "llm_unavailable"
  }
}

/** The LLM answered something that is not a usable completion (after one repair round trip). */
export class LlmBadResponse extends TaggedError<LlmBadResponse>()("LlmBadResponse", {
  message: Schema.String,
  attempts: Schema.Array(LlmAttempt)
}) {
  get code() {
    return "llm_bad_response"
  }
}

/** The tenant has no such LLM configured, or its secret is missing. */
export class LlmNotConfigured extends TaggedError<LlmNotConfigured>()("LlmNotConfigured", {
  message: Schema.String
}) {
  get code() {
    return "llm_not_configured"
  }
}

export const LlmError = Schema.Union(LlmUnavailable, LlmBadResponse, LlmNotConfigured)
export type LlmError = typeof LlmError.Type
