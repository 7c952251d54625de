/**
 * The audit trail: one record per agent action, tool invocation and third-party call, stamped with time and
 * trace and linked into a hash chain (`AuditChain`), written by a sink: `StdoutSink` (Cloud Logging's structured
 * JSON lines), `GcpSink` (the Cloud Logging API) or `MemorySink` (tests). `AuditConfig` picks one from the
 * environment; `Verify` checks an export.
 */
import * as Metrics from "@altan/domain/Metrics"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import { randomBytes } from "node:crypto"
import { makeChains } from "./AuditChain.js"
import { sanitizeDetails } from "./Redaction.js"

/**
 * What an audit record is about. `tool.invoke` is one tool call as the agent asked for it;
 * `http.request` one request to a third party (an attempt); `config.change` a write to tools, LLMs,
 * secrets (never their values), connections or settings; `approval.decision` a person approved or rejected a
 * call (who, the call's input hash, the decision; a refused attempt is `denied`).
 */
export const AuditAction = Schema.Literal(
  "task.accepted",
  "task.finished",
  "llm.call",
  "tool.invoke",
  "http.request",
  "config.change",
  "auth.failure",
  "authz.failure",
  "approval.decision"
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
 * Runs an effect and records how it went: `entry` makes the record from the effect's exit and the milliseconds
 * it took by the `Clock`. The effect's success or failure is passed on unchanged; nothing is recorded when the
 * fiber is interrupted.
 */
export const timed: {
  <A, E>(
    audit: AuditLog["Type"],
    entry: (exit: Exit.Exit<NoInfer<A>, NoInfer<E>>, latencyMs: number) => AuditEntry
  ): <R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    audit: AuditLog["Type"],
    entry: (exit: Exit.Exit<A, E>, latencyMs: number) => AuditEntry
  ): Effect.Effect<A, E, R>
} = dual(3, <A, E, R>(
  self: Effect.Effect<A, E, R>,
  audit: AuditLog["Type"],
  entry: (exit: Exit.Exit<A, E>, latencyMs: number) => AuditEntry
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const exit = yield* Effect.exit(self)
    yield* audit.record(entry(exit, (yield* Clock.currentTimeMillis) - started))
    return yield* exit
  }))

/**
 * The audit trail. Recording never fails the caller: a sink that cannot write is reported in the
 * logs and the call goes on.
 */
export class AuditLog extends Context.Tag("@altan/audit/AuditLog")<AuditLog, {
  readonly record: (entry: AuditEntry) => Effect.Effect<void>
}>() {
  /** `timed`, for modules that import the Tag alone. */
  static readonly timed = timed
}

/** Records nothing: for unit tests of services that do not look at the audit trail. */
export const layerNoop: Layer.Layer<AuditLog> = Layer.succeed(AuditLog, { record: () => Effect.void })

/** A sink could not take a record. The message names the chain and seq, never the record's details. */
export class AuditSinkError extends Data.TaggedError("AuditSinkError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Where records go. `write` takes one record synchronously, in `seq` order within a chain, and throws
 * (an `AuditSinkError` to say why) when it cannot; a slow backend buffers and sends later, as `GcpSink` does.
 * Being synchronous, linking a record into its chain and handing it over happen together: appends never fork a
 * chain and need no lock.
 */
export interface AuditSink {
  /** `stdout`, `gcp`, `memory`, `none`: the `sink` tag of `altan_audit_sink_failures_total` and of warnings. */
  readonly name: string
  readonly write: (record: AuditRecord) => void
}

/** Options of `make`. */
export interface MakeOptions {
  /** The writer's part of the chain names, `<tenant_id>/<processId>`; by default 16 random hex digits. */
  readonly processId?: string
}

/** Writes nothing; the chains are still kept and the records counted in the metrics. */
export const noneSink: AuditSink = { name: "none", write: () => undefined }

/**
 * The `AuditLog` service writing to `sink`: stamps `time` (the Effect `Clock`) and `trace_id` (the current
 * span's trace, when there is one), strips secrets from `details` (`sanitizeDetails`), links the record into
 * its tenant's chain and writes it. `record` never fails: a sink error is logged as a warning, counted in
 * `altan_audit_sink_failures_total`, and leaves a gap (a missing seq) in the chain. Every record counts in
 * `altan_audit_records_total{action,outcome}`.
 *
 * A record is one synchronous step of the calling fiber: it is on every third-party request, where a chain of
 * effects (lock, clock, span lookup, metric) cost several times the hashing itself.
 */
export const make = (sink: AuditSink, options: MakeOptions = {}): Effect.Effect<AuditLog["Type"]> =>
  Effect.sync(() => {
    const processId = options.processId ?? randomBytes(8).toString("hex")
    const chains = makeChains(processId)
    const sinkFailures = Metrics.withTags(Metrics.auditSinkFailuresKey, { sink: sink.name })
    // one metric per action × outcome pair (a few dozen), each finding its series once
    const counters = new Map<string, typeof Metrics.auditRecords>()
    const recordCounter = (action: string, outcome: string) => {
      const key = `${action}\u0000${outcome}`
      let counter = counters.get(key)
      if (counter === undefined) {
        counter = Metrics.withTags(Metrics.auditRecordsKey, { action, outcome })
        counters.set(key, counter)
      }
      return counter
    }

    const lost = (record: AuditRecord, cause: unknown) => {
      const what =
        `audit: the ${sink.name} sink lost record ${record.chain} #${record.seq} (${record.action} ${record.target})`
      return Effect.zipRight(
        Metric.increment(sinkFailures),
        cause instanceof AuditSinkError
          ? Effect.logWarning(`${what}: ${cause.message}`)
          : Effect.logWarning(what, Cause.die(cause))
      )
    }

    const record = (entry: AuditEntry): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        let record: AuditRecord
        try {
          const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
          const span = fiber.currentSpan
          record = chains.append(entry.tenant_id, (link) => ({
            tenant_id: entry.tenant_id,
            ...(entry.user === undefined ? {} : { user: entry.user }),
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            ...(typeof entry.latency_ms === "number" && Number.isFinite(entry.latency_ms)
              ? { latency_ms: entry.latency_ms }
              : {}),
            ...(entry.details === undefined ? {} : { details: sanitizeDetails(entry.details) }),
            time: new Date(now).toISOString(),
            ...(span === undefined ? {} : { trace_id: span.traceId }),
            ...link
          }))
          recordCounter(entry.action, entry.outcome).unsafeUpdate(1, fiber.getFiberRef(FiberRef.currentMetricLabels))
        } catch (cause) {
          return Effect.logWarning("audit: could not record an entry", Cause.die(cause))
        }
        try {
          sink.write(record)
          return Effect.void
        } catch (cause) {
          return lost(record, cause)
        }
      })

    return AuditLog.of({ record })
  })

/** The `AuditLog` writing to `sink`. */
export const layer = (sink: AuditSink, options?: MakeOptions): Layer.Layer<AuditLog> =>
  Layer.effect(AuditLog, make(sink, options))
