import { EgressDenied, EgressFailed, type EgressRequest, type EgressResponse } from "@altan/domain/Egress"
import type { TenantId } from "@altan/domain/Ids"
import type { ChatMessage, Completion, LlmError, LlmNotConfigured } from "@altan/domain/Llm"
import { retryAfterMs } from "@altan/domain/RetryAfter"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import type { Credential, ToolFailed } from "@altan/domain/ToolWorker"
import { ToolFailed as ToolFailedError } from "@altan/domain/ToolWorker"
import { ToolInputInvalid } from "@altan/domain/ToolWorker"
import { reworded } from "@altan/domain/Wording"
import * as Effect from "effect/Effect"
import * as JSONSchema from "effect/JSONSchema"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { bodyOf } from "./Egress.js"

/**
 * An outbound request as a tool makes it: the allowlist and the credential's header (dropped on a redirect to
 * another origin) are the tool service's business, not the tool's.
 */
export type ToolHttpRequest = Omit<EgressRequest, "allowHosts" | "credentialHeaders">

/** What a tool run gets besides its input. */
export interface ToolContext {
  readonly tenantId: TenantId
  /** The tenant's credential for the tool's provider, handed over by the integrator with this call. */
  readonly credential?: Credential | undefined
  /**
   * The guarded HTTP client, bound to what this tenant may reach (its egress allowlist plus the
   * tool's vendor hosts and configured base URLs).
   */
  readonly http: (request: ToolHttpRequest) => Effect.Effect<EgressResponse, EgressDenied | EgressFailed>
  /** The tenant's base URL override for a provider (settings `providers`), e.g. a Salesforce instance URL. */
  readonly baseUrl: (provider: string) => string | undefined
  /**
   * One completion from the tenant's LLMs (the task's chain, else the tenant's default and fallbacks),
   * answered by the integrator's LLM connection, so the tenant's key never reaches the tool service.
   */
  readonly complete: (messages: ReadonlyArray<ChatMessage>) => Effect.Effect<Completion, LlmError | LlmNotConfigured>
  /** Stable across every attempt of one call: tools whose vendor deduplicates by a key send it. */
  readonly idempotencyKey?: string | undefined
  /**
   * Told by a tool of a remote MCP server that the server said its tools changed (`notifications/tools/list_changed`)
   * during the call: its tools are imported again.
   */
  readonly toolsChanged?: (() => Effect.Effect<void>) | undefined
}

/** The tenant's credential for the provider, or the failure that says how to connect it. */
export const requireCredential = (
  toolId: string,
  provider: string,
  ctx: ToolContext
): Effect.Effect<Credential, ToolFailed> =>
  ctx.credential !== undefined ? Effect.succeed(ctx.credential) : Effect.fail(
    new ToolFailedError({
      tool_id: toolId,
      message: `no ${provider} connection for this tenant: connect it with PUT /v1/connections/${provider}`,
      retryable: false
    })
  )

/** An outbound failure as a tool failure: denied calls are not retryable, network and timeouts are. */
export const httpFailed = (toolId: string) => (error: EgressDenied | EgressFailed): ToolFailed =>
  new ToolFailedError({
    tool_id: toolId,
    message: EgressDenied.is(error) ? `egress_denied: ${error.message}` : error.message,
    retryable: EgressFailed.is(error) && error.retryable,
    ...(EgressFailed.is(error) && error.reason === "connect" ? { not_applied: true } : {})
  })

/**
 * A vendor's HTTP answer as the tool's result: JSON bodies parsed (text otherwise); non-2xx answers
 * become `ToolFailed` with the status, a body excerpt and whether a retry may help (5xx, 429).
 */
export const checkStatus = (toolId: string, response: EgressResponse): Effect.Effect<unknown, ToolFailed> => {
  const { text, value } = bodyOf(response)
  if (response.status >= 200 && response.status < 300) return Effect.succeed(value)
  const retryAfter = retryAfterMs(response.headers)
  return Effect.fail(
    new ToolFailedError({
      tool_id: toolId,
      message: `${toolId}: the upstream answered HTTP ${response.status}`,
      retryable: response.status >= 500 || response.status === 429,
      status: response.status,
      body_excerpt: text.slice(0, 500),
      ...(retryAfter !== undefined ? { retry_after_ms: retryAfter } : {}),
      // a 429 refuses the request before doing anything with it
      ...(response.status === 429 ? { not_applied: true } : {})
    })
  )
}

/**
 * A bug in a tool (a URL `new URL` rejects, an output that does not encode) fails its call, not whoever runs it: the
 * step gets the message and the task goes on.
 */
export const failOnDefect = (toolId: string) => <A, E, R>(run: Effect.Effect<A, E, R>) =>
  Effect.catchAllDefect(run, (defect) =>
    Effect.fail(
      new ToolFailedError({
        tool_id: toolId,
        message: `${toolId} failed: ${defect instanceof Error ? defect.message : String(defect)}`,
        retryable: false
      })
    ))

/** A tool the tool service can run: its advertised spec, input validation and implementation. */
export interface Tool {
  readonly spec: ToolSpec
  /** Hosts the tool may always reach (its vendor's API), beside the tenant's allowlist. */
  readonly hosts: ReadonlyArray<string>
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
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
    // an optional field's `undefined` alternative says nothing about what to send
    .filter((i) => !i.message.startsWith("Expected undefined"))
    .map((i) => ({ field: i.path.join("."), message: reworded(i.message) }))
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
  /** The tool calls its provider with the tenant's credential (`ctx.credential`): without one it does not run. */
  readonly needsConnection?: boolean
  readonly input: Schema.Schema<I, II>
  readonly output: Schema.Schema<O, OI>
  readonly sideEffect?: boolean
  readonly cacheable?: boolean
  readonly idempotent?: boolean
  /** The tool sends `ctx.idempotencyKey` so the vendor applies a retried write once. */
  readonly idempotencyKey?: boolean
  readonly hosts?: ReadonlyArray<string>
  readonly run: (input: I, ctx: ToolContext) => Effect.Effect<O, ToolFailed>
}): Tool => {
  const decodeInput = Schema.decodeUnknown(options.input, { errors: "all", onExcessProperty: "error" })
  const encodeOutput = Schema.encode(options.output)
  return {
    hosts: options.hosts ?? [],
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
      idempotent: options.idempotent ?? !(options.sideEffect ?? false),
      ...(options.idempotencyKey ? { idempotency_key: true } : {}),
      ...(options.needsConnection ? { needs_connection: true } : {})
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
