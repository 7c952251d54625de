import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Schema from "effect/Schema"
import { BudgetExhausted, ConnectionRequired, RateLimited, UpstreamUnavailable } from "./ConnectionErrors.js"
import { ErrorDetails, InvalidRequest, NotFound, Unavailable, UpstreamFailed } from "./Errors.js"
import { entityId, type TenantId } from "./Ids.js"
import { McpServer, McpServerConfig, McpServerId } from "./McpServers.js"
import { payload } from "./RpcPayload.js"
import { TaggedError } from "./TaggedError.js"
import { ToolDefinition, ToolSpec } from "./ToolDefinition.js"

/** The tool id is not a built-in nor one of the tenant's tools. */
export class ToolNotFound extends TaggedError<ToolNotFound>()("ToolNotFound", {
  tool_id: Schema.String
}) {
  get code() {
    return "tool_not_found"
  }
  override get message() {
    return `unknown tool: ${this.tool_id}`
  }
}

/** The input does not match the tool's JSON Schema; nothing was sent anywhere. */
export class ToolInputInvalid extends TaggedError<ToolInputInvalid>()("ToolInputInvalid", {
  tool_id: Schema.String,
  message: Schema.String,
  details: Schema.optional(ErrorDetails)
}) {
  get code() {
    return "invalid_tool_input" as const
  }
}

/** The tool ran and failed; `retryable` says whether trying again may help (network, 5xx, 429). */
export class ToolFailed extends TaggedError<ToolFailed>()("ToolFailed", {
  tool_id: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  status: Schema.optional(Schema.Int),
  body_excerpt: Schema.optional(Schema.String),
  /** The upstream's `Retry-After` (or equivalent), in milliseconds. */
  retry_after_ms: Schema.optional(Schema.Number),
  /**
   * The request certainly did not take effect upstream (no connection, or refused with 429), so even a
   * call with side effects may be tried again.
   */
  not_applied: Schema.optional(Schema.Boolean),
  /** Attempts made before giving up (set by the connection that retried). */
  attempts: Schema.optional(Schema.Int),
  /**
   * An earlier execution of the same call was started and its outcome is unknown (its process died mid-call);
   * it was not run again, since that could apply its side effect twice.
   */
  unknown_outcome: Schema.optional(Schema.Boolean),
  /** The upstream's rate-limit headers (`Retry-After`, `X-RateLimit-*`, vendor ones), for the provider's budget. */
  rate_headers: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String }))
}) {
  get code() {
    return "tool_failed"
  }
}

/** What a tool's spec says about retrying a call to it (the `policy` of `Connection.Invoke`). */
export const policyOf = (spec: ToolSpec) => ({
  idempotent: spec.idempotent,
  idempotency_key: spec.idempotency_key ?? false,
  ...(spec.max_attempts ? { max_attempts: spec.max_attempts } : {})
})

/** A `ToolFailed`'s own fields (not its attempts or headers), to rebuild it with more of them. */
export const toolFailedFields = (e: ToolFailed) => ({
  tool_id: e.tool_id,
  message: e.message,
  retryable: e.retryable,
  ...(e.status !== undefined ? { status: e.status } : {}),
  ...(e.body_excerpt !== undefined ? { body_excerpt: e.body_excerpt } : {}),
  ...(e.retry_after_ms !== undefined ? { retry_after_ms: e.retry_after_ms } : {}),
  ...(e.not_applied !== undefined ? { not_applied: e.not_applied } : {}),
  ...(e.unknown_outcome !== undefined ? { unknown_outcome: e.unknown_outcome } : {})
})

/**
 * What a call to a tool can fail with. `Unavailable`: the runtime could not take the call right now (a store it needs
 * is unreachable); nothing was executed, and asking again later is safe. `ConnectionRequired`, `UpstreamUnavailable`
 * and `RateLimited` are the `Connection`'s, which fronts every tool call (see `ConnectionErrors.ts`).
 */
export const ToolError = Schema.Union(
  Unavailable,
  ToolNotFound,
  ToolInputInvalid,
  ToolFailed,
  ConnectionRequired,
  BudgetExhausted,
  UpstreamUnavailable,
  RateLimited
)
export type ToolError = typeof ToolError.Type

/** A credential handed to the tool service with one call; the tool service never reads secret storage. */
export const Credential = Schema.Struct({
  header: Schema.String,
  value: Schema.Redacted(Schema.String)
})
export type Credential = typeof Credential.Type

/** A tool as `GET /v1/tools/{id}` shows it: its spec and, for a tenant's tool, the definition as written. */
export const ToolView = Schema.Struct({ spec: ToolSpec, definition: Schema.optional(ToolDefinition) })

export const ToolResult = Schema.Struct({
  output: Schema.Unknown,
  cached: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Attempts it took (retries by the connection); 1 when the first succeeded. */
  attempts: Schema.optional(Schema.Int),
  /** The error of the last failed attempt, when an attempt failed before one succeeded. */
  last_error: Schema.optional(Schema.String),
  /** The upstream's rate-limit headers of the last response, for the provider's budget. */
  rate_headers: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  /** The fallback tool that answered, when the called tool failed. */
  served_by: Schema.optional(Schema.String)
})
export type ToolResult = typeof ToolResult.Type

/** Built-in tool namespaces by vendor; a vendor's tools share a shard group, so runners can be dedicated to it. */
const vendorOfNamespace: Record<string, string> = {
  slack: "slack",
  hubspot: "hubspot",
  salesforce: "salesforce",
  google_calendar: "google",
  gmail: "google",
  teams: "microsoft",
  outlook: "microsoft"
}

/** Every shard group of the Tool Service: `tool` (utility, custom, catalog) and one per built-in vendor. */
export const toolShardGroups = ["tool", ...new Set(Object.values(vendorOfNamespace))].map((
  v
) => (v === "tool" ? v : `tool-${v}`))

/** The shard group of a tool: `tool-<vendor>` for a built-in vendor's tools, `tool` for the rest. */
export const toolShardGroup = (toolId: string): string => {
  const vendor = vendorOfNamespace[toolId.slice(0, toolId.indexOf("."))]
  return vendor ? `tool-${vendor}` : "tool"
}

/**
 * Executes calls of one tool for one tenant. Entity id: `tenantId/toolId`.
 *
 * `Execute` is uninterruptible from its caller: once a call is handed to the tool service it runs to its own end
 * (the egress guard's limits bound it) and its outcome is recorded, so a caller that stops waiting (a cancelled or
 * timed-out step, a runner shutting down or dying) never leaves a side effect half-known; asking again with the same
 * execution key gets that outcome.
 */
export const ToolWorker = Entity.make("ToolWorker", [
  Rpc.make("Execute", {
    payload: payload({
      input: Schema.Unknown,
      credential: Schema.optional(Credential),
      /** The tenant's egress allowlist (settings), beside which a tool may reach only its vendor's hosts. */
      egress_allowlist: Schema.optional(Schema.Array(Schema.String)),
      /** The tenant's base URL per provider (settings `providers`). */
      base_urls: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
      /** The LLMs a tool that generates text may use, in order (the task's chain, else the tenant's). */
      llms: Schema.optional(Schema.Array(Schema.String)),
      /** Stable across every attempt of one step: vendors that take one deduplicate retried writes. */
      idempotency_key: Schema.optional(Schema.String),
      /**
       * Names this execution (task, step, tool, attempt, try): a tool with side effects runs once per key, and a
       * repeat of the key gets the first execution's outcome, or `unknown_outcome` when that was lost mid-call.
       */
      execution_key: Schema.optional(Schema.String),
      task_id: Schema.optional(Schema.String),
      step_id: Schema.optional(Schema.String)
    }),
    success: ToolResult,
    error: ToolError
  }).annotate(ClusterSchema.Uninterruptible, "client"),
  Rpc.make("Describe", { success: ToolSpec, error: Schema.Union(ToolNotFound, Unavailable) }),
  /** Checks an input against the tool's schema without running anything (an approver's edited input). */
  Rpc.make("CheckInput", {
    payload: { input: Schema.Unknown },
    error: Schema.Union(ToolNotFound, ToolInputInvalid, Unavailable)
  }),
  /** Every tool of the tenant; sent to `ToolWorker[tenant/_catalog]`, like the three below. */
  Rpc.make("List", { success: Schema.Array(ToolSpec), error: Unavailable }),
  Rpc.make("PutTool", {
    payload: { definition: ToolDefinition },
    success: ToolSpec,
    error: Schema.Union(InvalidRequest, Unavailable)
  }),
  Rpc.make("GetTool", {
    payload: { tool_id: Schema.String },
    success: ToolView,
    error: Schema.Union(ToolNotFound, Unavailable)
  }),
  Rpc.make("DeleteTool", { payload: { tool_id: Schema.String }, error: Schema.Union(ToolNotFound, Unavailable) }),
  /**
   * Lists a remote MCP server's tools (`tools/list`, through the egress guard, with the tenant's credential for it)
   * and imports them as the tenant's tools `mcp.<server_id>.<name>`, replacing what the server had before; sent to
   * the catalog on `PUT` and on refresh. `UpstreamFailed`: the server could not be reached or answered no tool list.
   */
  Rpc.make("ImportMcpServer", {
    payload: {
      server_id: McpServerId,
      config: McpServerConfig,
      credential: Schema.optional(Credential),
      egress_allowlist: Schema.Array(Schema.String),
      /** Stored as `needs_authorization`, with no tool, the server not asked: it waits for its OAuth2 grant. */
      pending: Schema.optional(Schema.Boolean)
    },
    success: McpServer,
    error: Schema.Union(InvalidRequest, UpstreamFailed, Unavailable)
  }),
  Rpc.make("ListMcpServers", { success: Schema.Array(McpServer), error: Unavailable }),
  Rpc.make("GetMcpServer", {
    payload: { server_id: Schema.String },
    success: McpServer,
    error: Schema.Union(NotFound, Unavailable)
  }),
  /** Forgets the server and its tools; `false` when there was none. */
  Rpc.make("DeleteMcpServer", { payload: { server_id: Schema.String }, success: Schema.Boolean, error: Unavailable })
]).annotate(ClusterSchema.ShardGroup, (entityId) => toolShardGroup(entityId.slice(entityId.indexOf("/") + 1)))

/** The entity that answers `List` for a tenant (not a tool id: those cannot start with `_`). */
export const catalogId = (tenantId: string) => `${tenantId}/_catalog`

/** The entity id of a tenant's tool. */
export const toolWorkerId = (tenantId: TenantId, toolId: string) => entityId(tenantId, toolId)

/**
 * The catalog the readiness check asks, of a tenant id no token can carry (`_` cannot start one): an answer means
 * entities are being delivered, and it touches no tenant's data.
 */
export const readinessProbeId = catalogId("_readiness")
