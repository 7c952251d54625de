import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"

/**
 * What an audit record is about. `tool.invoke` is one tool call as the agent asked for it;
 * `http.request` one request to a third party (an attempt); `config.change` a write to tools, LLMs,
 * secrets (never their values), connections or settings.
 */
export const AuditAction = Schema.Literal(
  "task.accepted",
  "task.finished",
  "llm.call",
  "tool.invoke",
  "http.request",
  "config.change",
  "auth.failure",
  "authz.failure"
)
export type AuditAction = typeof AuditAction.Type

export const AuditOutcome = Schema.Literal("ok", "failed", "denied")
export type AuditOutcome = typeof AuditOutcome.Type

/** One audited event, as a service reports it; the audit log adds time, trace and the hash chain. */
export const AuditEntry = Schema.Struct({
  /** The tenant from the verified token; `-` when there is none (a refused token). */
  tenant_id: Schema.String,
  /** The token's `sub`, when known. */
  user: Schema.optional(Schema.String),
  action: AuditAction,
  /** What was acted on: a task id, `tool:<id>`, `llm:<id>`, `secret:<name>`, a host, a route. */
  target: Schema.String,
  outcome: AuditOutcome,
  latency_ms: Schema.optional(Schema.Number),
  /** Extra facts (status codes, error codes, step ids); never secret values or request bodies. */
  details: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type AuditEntry = typeof AuditEntry.Type

/** A record as written by a sink: the entry, when, in which trace, and its link in the tenant's hash chain. */
export const AuditRecord = Schema.Struct({
  ...AuditEntry.fields,
  time: Schema.String,
  trace_id: Schema.optional(Schema.String),
  /** The chain this record belongs to: one per tenant and writing process. */
  chain: Schema.String,
  seq: Schema.Int,
  prev_hash: Schema.String,
  hash: Schema.String
})
export type AuditRecord = typeof AuditRecord.Type

/**
 * The audit trail. Recording never fails the caller: a sink that cannot write is reported in the
 * logs and the call goes on.
 */
export class AuditLog extends Context.Tag("@altan/domain/AuditLog")<AuditLog, {
  readonly record: (entry: AuditEntry) => Effect.Effect<void>
}>() {}

/** Records nothing: for unit tests of services that do not look at the audit trail. */
export const layerNoop: Layer.Layer<AuditLog> = Layer.succeed(AuditLog, { record: () => Effect.void })
