import * as Schema from "effect/Schema"
import { Budgets } from "./Budget.js"
import { ToolId } from "./Ids.js"
import { HttpUrl, LlmId } from "./LlmConfig.js"
import { ApprovalRule } from "./Task.js"

/** `host` or `host:port`; `*.example.com` matches subdomains only. */
export const EgressHost = Schema.String.pipe(
  Schema.pattern(/^(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$/, { message: () => "egress host must be host or host:port" })
)

/** A token bucket: at most `requests` calls per `per_seconds` seconds (bursts up to `requests`). */
export const RateLimit = Schema.Struct({
  requests: Schema.Int.pipe(Schema.between(1, 1_000_000)),
  per_seconds: Schema.Number.pipe(Schema.between(0.001, 86_400))
})
export type RateLimit = typeof RateLimit.Type

/** Per-provider overrides, e.g. a regional endpoint or a Salesforce instance URL, and its call budget. */
export const ProviderSettings = Schema.Struct({
  base_url: Schema.optional(HttpUrl),
  /** Replaces the built-in vendor's default budget for this tenant. */
  rate_limit: Schema.optional(RateLimit),
  /** The tenant's daily API allowance at this provider (e.g. Salesforce's 24-hour limit). */
  daily_limit: Schema.optional(Schema.Int.pipe(Schema.between(1, 1_000_000_000)))
})

/** What the edge admits from one tenant (per integrator runner). */
export const AdmissionSettings = Schema.Struct({
  requests_per_second: Schema.optional(Schema.Number.pipe(Schema.between(0.1, 100_000))),
  max_concurrent_tasks: Schema.optional(Schema.Int.pipe(Schema.between(1, 100_000)))
})
export type AdmissionSettings = typeof AdmissionSettings.Type

/**
 * What a task does with a step whose call with side effects has an unknown outcome (its runner died mid-call):
 * `fail` the task naming the step (at most once, the default), or `retry` the call (at least once).
 */
export const OnUnknownOutcome = Schema.Literal("fail", "retry")
export type OnUnknownOutcome = typeof OnUnknownOutcome.Type

/** A tenant's settings (`PUT /v1/settings`). */
export const Settings = Schema.Struct({
  default_llm: Schema.optional(LlmId),
  fallback_llms: Schema.optionalWith(Schema.Array(LlmId).pipe(Schema.maxItems(5)), { default: () => [] }),
  egress_allowlist: Schema.optionalWith(Schema.Array(EgressHost).pipe(Schema.maxItems(256)), { default: () => [] }),
  providers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: ProviderSettings }), {
    default: () => ({})
  }),
  admission: Schema.optional(AdmissionSettings),
  on_unknown_outcome: Schema.optional(OnUnknownOutcome),
  /** Calls that wait for a person's approval, in every task of the tenant. */
  approval_required: Schema.optional(Schema.Array(ApprovalRule).pipe(Schema.maxItems(256))),
  /** Seconds a call waits for its approval before it expires and its task fails (`approval_expired`). Default 1 day. */
  approval_timeout: Schema.optional(Schema.Int.pipe(Schema.between(1, 30 * 86_400))),
  /**
   * Seconds a call waits for a missing (or lost) connection of its provider before its task fails
   * (`connection_required`). Default 1 day; 0: no wait, the task fails at once.
   */
  connection_timeout: Schema.optional(Schema.Int.pipe(Schema.between(0, 30 * 86_400))),
  /**
   * The tools the tenant's MCP server (`/mcp`) offers MCP clients. Unset: every tool of the tenant (those that need a
   * person's approval are marked so, and wait for it like any call).
   */
  mcp_exposed_tools: Schema.optional(Schema.Array(ToolId).pipe(Schema.maxItems(256))),
  /** Spend budgets per UTC day or month: LLM tokens, tool calls, LLM cost in USD (see `Budget.ts`). */
  budgets: Schema.optional(Budgets),
  /**
   * The tools a task may use, and the model is offered, when the task names none (its own `tools`): a default
   * toolset, so the model is not sent every tool's schema on every turn. Unset: every tool of the tenant.
   */
  tools: Schema.optional(Schema.Array(ToolId).pipe(Schema.minItems(1), Schema.maxItems(256)))
})
export type Settings = typeof Settings.Type

/** `connection_timeout` when the tenant set none: a day. */
export const defaultConnectionTimeoutSeconds = 86_400

export const emptySettings: Settings = { fallback_llms: [], egress_allowlist: [], providers: {} }
