import * as Schema from "effect/Schema"
import { ToolId } from "./Ids.js"
import { HttpUrl } from "./LlmConfig.js"

export const ParameterType = Schema.Literal("string", "number", "integer", "boolean", "object", "array")

/** One entry of the seed's `parameters` list. */
export const ToolParameter = Schema.Struct({
  name: Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/)),
  type: ParameterType,
  description: Schema.optional(Schema.String),
  required: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  enum: Schema.optional(Schema.Array(Schema.Unknown))
})
export type ToolParameter = typeof ToolParameter.Type

/** A JSON Schema object (draft 2020-12 subset), as tools advertise their input and output. */
export const JsonSchema = Schema.Record({ key: Schema.String, value: Schema.Unknown })
export type JsonSchema = typeof JsonSchema.Type

export const HttpMethod = Schema.Literal("GET", "POST", "PUT", "PATCH", "DELETE")

export const ToolAuth = Schema.Literal("oauth2", "api_key", "custom", "none")

/** A tenant's custom HTTP tool, exactly as the seed writes it (`PUT /v1/tools/{tool_id}`). */
export const ToolDefinition = Schema.Struct({
  tool_id: ToolId,
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)),
  description: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(4000)), { default: () => "" }),
  parameters: Schema.Union(Schema.Array(ToolParameter), JsonSchema),
  endpoint: HttpUrl,
  method: HttpMethod,
  auth: ToolAuth,
  provider: Schema.optional(Schema.String),
  fallback: Schema.optional(ToolId),
  timeout_ms: Schema.optional(Schema.Int.pipe(Schema.between(1, 300_000))),
  /** Tries per call, retries of transient failures included (default: the operator's `TOOL_MAX_ATTEMPTS`). */
  max_attempts: Schema.optional(Schema.Int.pipe(Schema.between(1, 10))),
  /** A header the API deduplicates writes by (e.g. `Idempotency-Key`): a key stable across retries is sent in it. */
  idempotency_header: Schema.optional(
    Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9-]{1,64}$/, { message: () => "must be an HTTP header name" }))
  ),
  side_effect: Schema.optional(Schema.Boolean),
  cacheable: Schema.optional(Schema.Boolean),
  idempotent: Schema.optional(Schema.Boolean),
  /** Every call waits for a person's approval (`POST /v1/tasks/{id}/steps/{step}/approve`) before it runs. */
  requires_approval: Schema.optional(Schema.Boolean)
})
export type ToolDefinition = typeof ToolDefinition.Type

/** What callers (the agent, the LLM, `GET /v1/tools`) know of a tool. */
export const ToolSpec = Schema.Struct({
  tool_id: ToolId,
  name: Schema.String,
  description: Schema.String,
  provider: Schema.String,
  builtin: Schema.Boolean,
  input_schema: JsonSchema,
  output_schema: Schema.optional(JsonSchema),
  side_effect: Schema.Boolean,
  cacheable: Schema.Boolean,
  idempotent: Schema.Boolean,
  /** The tool that answers instead when this one fails in a way a retry might fix (network, timeout, 5xx, 429). */
  fallback: Schema.optional(ToolId),
  timeout_ms: Schema.optional(Schema.Int),
  max_attempts: Schema.optional(Schema.Int),
  /** The tool sends an idempotency key the vendor deduplicates by, so a retried write applies once. */
  idempotency_key: Schema.optional(Schema.Boolean),
  /** Every call waits for a person's approval. */
  requires_approval: Schema.optional(Schema.Boolean),
  /**
   * The tool calls its provider with the tenant's credential: without a usable connection it does not run, and its
   * call waits for one (`ConnectionRequired`).
   */
  needs_connection: Schema.optional(Schema.Boolean)
})
export type ToolSpec = typeof ToolSpec.Type
