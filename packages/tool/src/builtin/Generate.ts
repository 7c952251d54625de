import type { ChatMessage } from "@altan/domain/Llm"
import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"

const TOOL_ID = "text.generate"

export const TextGenerateInput = Schema.Struct({
  prompt: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200_000)).annotations({
    description: "What to write, with everything the model needs to know (it sees nothing else)."
  }),
  instructions: Schema.optionalWith(
    Schema.String.pipe(Schema.maxLength(20_000)).annotations({
      description: "System instructions: tone, format, language, length."
    }),
    { exact: true }
  )
})
export type TextGenerateInput = typeof TextGenerateInput.Type

export const TextGenerateOutput = Schema.Struct({
  text: Schema.String.annotations({ description: "The generated text." }),
  llm_id: Schema.String.annotations({ description: "The LLM that answered (a fallback when the first failed)." }),
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int
})
export type TextGenerateOutput = typeof TextGenerateOutput.Type

/** `text.generate`: one completion from the tenant's own LLM (through the integrator), without tools. */
export const TextGenerate: Tool.Tool = Tool.make({
  id: TOOL_ID,
  name: "Generate text",
  description: "Writes text with the tenant's LLM from a self-contained prompt (e.g. draft an email body, " +
    "summarise a record, classify a message) and returns { text }. Use it inside structured plans; the model " +
    "sees only `prompt` and `instructions`.",
  input: TextGenerateInput,
  output: TextGenerateOutput,
  run: (input, ctx) => {
    const messages: Array<ChatMessage> = [
      ...(input.instructions ? [{ role: "system" as const, content: input.instructions }] : []),
      { role: "user", content: input.prompt }
    ]
    return ctx.complete(messages).pipe(
      Effect.mapError((error) =>
        new ToolFailed({
          tool_id: TOOL_ID,
          message: `${TOOL_ID}: ${error.message}`,
          // the LLM connection already retried and tried the fallback LLMs; another round would repeat that
          retryable: false
        })
      ),
      Effect.flatMap((completion) =>
        completion.content === null
          ? Effect.fail(
            new ToolFailed({ tool_id: TOOL_ID, message: `${TOOL_ID}: the LLM answered no text`, retryable: false })
          )
          : Effect.succeed({
            text: completion.content,
            llm_id: completion.llm_id,
            prompt_tokens: completion.usage.prompt_tokens,
            completion_tokens: completion.usage.completion_tokens
          })
      )
    )
  }
})
