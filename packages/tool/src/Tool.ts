import type { TenantId } from "@altan/domain/Ids"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import type { Credential, ToolFailed } from "@altan/domain/ToolWorker"
import { ToolInputInvalid } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as JSONSchema from "effect/JSONSchema"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/** What a tool run gets besides its input. */
export interface ToolContext {
  readonly tenantId: TenantId
  readonly credential?: Credential | undefined
}

/** A tool the tool service can run: its advertised spec, input validation and implementation. */
export interface Tool {
  readonly spec: ToolSpec
  /** Validates the raw input against the tool's schema; nothing runs before this succeeds. */
  readonly decode: (input: unknown) => Effect.Effect<unknown, ToolInputInvalid>
  readonly run: (input: unknown, ctx: ToolContext) => Effect.Effect<unknown, ToolFailed>
}

const jsonSchemaOf = (schema: Schema.Schema.Any): Record<string, unknown> => {
  const { $schema: _, ...rest } = JSONSchema.make(schema) as unknown as Record<string, unknown>
  return rest
}

/** `{ field, issues }` details naming the offending input fields. */
export const issuesOf = (error: ParseResult.ParseError) => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({
    field: i.path.join("."),
    message: i.message
  }))
  return { field: issues[0]?.field ?? "", issues }
}

/**
 * A built-in tool whose input and output are Effect Schemas; the advertised JSON Schemas are
 * derived from them, so what is advertised is exactly what is enforced.
 */
export const make = <I, II, O, OI>(options: {
  readonly id: string
  readonly name: string
  readonly description: string
  readonly provider?: string
  readonly input: Schema.Schema<I, II>
  readonly output: Schema.Schema<O, OI>
  readonly sideEffect?: boolean
  readonly cacheable?: boolean
  readonly idempotent?: boolean
  readonly run: (input: I, ctx: ToolContext) => Effect.Effect<O, ToolFailed>
}): Tool => {
  const decodeInput = Schema.decodeUnknown(options.input, { errors: "all", onExcessProperty: "error" })
  const encodeOutput = Schema.encode(options.output)
  return {
    spec: {
      tool_id: options.id as ToolSpec["tool_id"],
      name: options.name,
      description: options.description,
      provider: options.provider ?? "utility",
      builtin: true,
      input_schema: jsonSchemaOf(options.input),
      output_schema: jsonSchemaOf(options.output),
      side_effect: options.sideEffect ?? false,
      cacheable: options.cacheable ?? false,
      idempotent: options.idempotent ?? !(options.sideEffect ?? false)
    },
    decode: (input) =>
      decodeInput(input).pipe(
        Effect.mapError((error) => {
          const details = issuesOf(error)
          return new ToolInputInvalid({
            tool_id: options.id,
            message: `invalid input for ${options.id}: ${
              details.issues.map((i) => `${i.field || "(input)"}: ${i.message}`).join("; ")
            }`,
            details
          })
        })
      ),
    run: (input, ctx) =>
      options.run(input as I, ctx).pipe(
        Effect.flatMap((out) => Effect.orDie(encodeOutput(out)))
      )
  }
}
