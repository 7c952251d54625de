/**
 * The Cloud Logging API sink (`AUDIT_SINK=gcp`): records written as log entries through `@google-cloud/logging`,
 * buffered so that callers never wait on Google.
 */
import { errorMessage } from "@altan/domain/Errors"
import * as Metrics from "@altan/domain/Metrics"
import type { Logging, LoggingOptions, MonitoredResource } from "@google-cloud/logging"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import { type AuditRecord, type AuditSink, AuditSinkError } from "./AuditLog.js"
import { labelsOf, severityOf, traceOf } from "./internal/cloudLogging.js"

/** The log the records go to unless told otherwise: `projects/<projectId>/logs/altan-audit`. */
export const defaultLogName = "altan-audit"

/**
 * Options of the `Logging` client: credentials (Application Default Credentials by default), and to reach
 * another endpoint over HTTP/JSON `fallback: true`, `apiEndpoint`, `port`, `protocol` and an `authClient`.
 */
export type ClientOptions = LoggingOptions & {
  readonly fallback?: boolean
  readonly port?: number
  readonly protocol?: "http" | "https"
}

/** Options of `make`. */
export interface Options {
  /** The project the log belongs to: `projects/<projectId>/logs/<logName>`. */
  readonly projectId: string
  /** `altan-audit` by default. */
  readonly logName?: string
  /** The monitored resource of the entries; detected by the client (GKE container, GCE...) when absent. */
  readonly resource?: MonitoredResource
  readonly client?: ClientOptions
  /** Records buffered while Cloud Logging is slow or down; beyond that, records are dropped (a gap). 10,000. */
  readonly capacity?: number
  /** Records per `entries:write` request at most; 200. */
  readonly maxBatch?: number
  /** How long closing waits for buffered records to be written; 10 seconds. */
  readonly flushTimeout?: Duration.DurationInput
}

/**
 * Records to Cloud Logging through `@google-cloud/logging`: each record is the `jsonPayload` of an entry
 * with the record's severity, labels, trace and time. `write` only buffers; a background fiber sends what has
 * accumulated in one `entries:write` per batch (gax retries transient errors), so callers never wait on
 * Google. A batch that still fails is logged and counted in `altan_audit_sink_failures_total{sink="gcp"}`.
 * Closing the scope writes what is buffered (within `flushTimeout`) and closes the client.
 */
export const make = (options: Options): Effect.Effect<AuditSink, AuditSinkError, Scope.Scope> =>
  Effect.gen(function*() {
    // Loaded on first use: processes with another sink never load gax, gRPC and protobuf.
    const { Logging } = yield* Effect.promise(() => import("@google-cloud/logging"))
    const logging: Logging = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new Logging({ ...options.client, projectId: options.projectId }),
        catch: (cause) =>
          new AuditSinkError({ message: `cannot create the Cloud Logging client: ${errorMessage(cause)}` })
      }),
      (logging) =>
        Effect.promise(async () => {
          const service = logging.loggingService as unknown as { close?: () => Promise<void> } | undefined
          await service?.close?.().catch(() => undefined)
        })
    )
    const log = logging.log(options.logName ?? defaultLogName)
    const failures = Metric.tagged(Metrics.auditSinkFailures, "sink", "gcp")
    const queue = yield* Queue.dropping<AuditRecord>(options.capacity ?? 10_000)

    const entryOf = (record: AuditRecord) =>
      log.entry({
        severity: severityOf(record.outcome),
        labels: labelsOf(record),
        // the ISO string converts exactly; a Date loses a millisecond to floating point in the client
        timestamp: record.time,
        ...(record.trace_id === undefined ? {} : { trace: traceOf(record.trace_id, options.projectId) })
      }, record)

    const writeBatch = (batch: Chunk.Chunk<AuditRecord>) =>
      Effect.tryPromise({
        try: () => log.write(Chunk.toArray(batch).map(entryOf), options.resource ? { resource: options.resource } : {}),
        catch: (cause) => new AuditSinkError({ message: errorMessage(cause), cause })
      }).pipe(
        Effect.catchAllCause((cause) =>
          Effect.zipRight(
            Metric.incrementBy(failures, Chunk.size(batch)),
            Effect.logWarning(
              `audit: Cloud Logging did not take ${Chunk.size(batch)} records (${
                Chunk.toArray(batch).map((r) => `${r.chain} #${r.seq}`).join(", ").slice(0, 500)
              }): ${errorMessage(Cause.squash(cause)).slice(0, 300)}`
            )
          )
        )
      )

    // A batch taken from the queue is always written, even while the scope closes.
    const fiber = yield* Effect.forkDaemon(
      Effect.forever(
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(restore(Queue.takeBetween(queue, 1, options.maxBatch ?? 200)), writeBatch)
        )
      )
    )
    yield* Effect.addFinalizer(() =>
      Fiber.interrupt(fiber).pipe(
        Effect.zipRight(Queue.takeAll(queue)),
        Effect.flatMap((rest) => (Chunk.isEmpty(rest) ? Effect.void : writeBatch(rest))),
        Effect.timeout(options.flushTimeout ?? Duration.seconds(10)),
        Effect.catchAll(() => Effect.logWarning("audit: records still buffered for Cloud Logging were not written")),
        Effect.zipRight(Queue.shutdown(queue))
      )
    )

    return {
      name: "gcp",
      write: (record) => {
        if (!Queue.unsafeOffer(queue, record)) {
          throw new AuditSinkError({
            message: `Cloud Logging buffer full: record ${record.chain} #${record.seq} dropped`
          })
        }
      }
    } satisfies AuditSink
  })
