/**
 * The audit trail (`@altan/domain/AuditLog`): one record per agent action, tool invocation and third-party
 * call, stamped with time and trace and linked into a hash chain, written to stdout (Cloud Logging's
 * structured JSON lines), to Cloud Logging through its API, or kept in memory for tests.
 *
 * Hash chain: the records of one tenant written by one process form a chain, `<tenant_id>/<processId>`
 * (a random process id drawn when the layer is built, so runners never interleave a chain). `seq` counts
 * from 1, `prev_hash` is the previous record's `hash` (`genesisHash` for the first), and `hash` is the
 * SHA-256 (hex) of the record without `hash` in canonical JSON (`canonicalJson`: RFC 8785 for JSON data,
 * keys sorted by UTF-16 code units, no whitespace). `verify` (and `npm run audit:verify`) recomputes it:
 * an altered, deleted, reordered or inserted record breaks the chain; a record a sink could not write shows
 * up as a missing seq. Removing the newest records of a chain is not detectable from the chain alone:
 * compare the last hashes `verify` reports with an earlier run.
 */
import { type AuditAction, type AuditEntry, AuditLog, type AuditOutcome, AuditRecord } from "@altan/domain/AuditLog"
import { canonicalJson } from "@altan/domain/Json"
import * as Metrics from "@altan/domain/Metrics"
import { maskSecrets } from "@altan/domain/Secret"
import type { Logging, LoggingOptions, MonitoredResource } from "@google-cloud/logging"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { createHash, randomBytes } from "node:crypto"

export { AuditLog }

// ---------------------------------------------------------------------------------------------------------------
// Canonical JSON and the hash chain
// ---------------------------------------------------------------------------------------------------------------

/** The `prev_hash` of the first record of a chain. */
export const genesisHash = "0".repeat(64)

/** Deterministic JSON (RFC 8785 for JSON data), which the record hashes are computed over. */
export { canonicalJson }

const sha256Hex = (text: string) => createHash("sha256").update(text, "utf8").digest("hex")

/** The `hash` a record must carry: SHA-256 hex of its canonical JSON without the `hash` field. */
export const recordHash = (record: object): string => {
  const { hash: _hash, ...rest } = record as Record<string, unknown>
  return sha256Hex(canonicalJson(rest))
}

// ---------------------------------------------------------------------------------------------------------------
// Defence in depth: no secret values in details
// ---------------------------------------------------------------------------------------------------------------

/** What replaces a sensitive value in `details`. */
export const redacted = "<redacted>"

const sensitiveNames = new Set([
  "authorization",
  "proxyauthorization",
  "password",
  "passwd",
  "passphrase",
  "secret",
  "token",
  "apikey",
  "value",
  "cookie",
  "setcookie",
  "privatekey",
  "credential",
  "credentials",
  "bearer"
])
const sensitiveSuffixes = ["password", "secret", "token", "apikey", "privatekey", "authorization", "credentials"]

/**
 * Whether a key of `details` names a secret, whatever its case and separators: `authorization`, `password`,
 * `secret`, `token`, `api_key`, `value`, `cookie`, `private_key`, `credentials`, and any key ending in one of
 * them (`client_secret`, `access_token`, `x-api-key`). `secret_name` or `prompt_tokens` are kept.
 */
export const isSensitiveKey = (key: string): boolean => {
  const name = key.toLowerCase().replace(/[^a-z0-9]/g, "")
  return sensitiveNames.has(name) || sensitiveSuffixes.some((suffix) => name.endsWith(suffix))
}

/** Strings that are credentials whatever their key: `Bearer ...` / `Basic ...` headers and JWTs. */
const looksLikeCredential = (text: string) =>
  /^(?:bearer|basic)\s+\S/i.test(text) || /^eyJ[\w-]*\.eyJ[\w-]*\./.test(text)

const maxDepth = 8

/**
 * `details` as plain JSON data, with every value under a sensitive key (`isSensitiveKey`), every `Redacted`
 * and every string that looks like a credential replaced by `"<redacted>"`, and credential-shaped parts of other
 * strings masked (`maskSecrets`), at any depth. Callers must not
 * put secrets in an audit entry at all; this only catches the obvious mistakes. Dates become ISO strings,
 * bigints strings, non-finite numbers `null`; functions, symbols and `undefined` are dropped, cycles and
 * nesting deeper than 8 become `"<circular>"` / `"<truncated>"`, so the record hashes the same once parsed back.
 */
export const sanitizeDetails = (details: Readonly<Record<string, unknown>>): Record<string, unknown> =>
  sanitizeObject(details, 0, new Set()) as Record<string, unknown>

const sanitizeValue = (value: unknown, depth: number, seen: Set<object>): unknown => {
  switch (typeof value) {
    case "string":
      // a whole value that is a credential goes; one inside text (an upstream's echo) is masked in place
      return looksLikeCredential(value) ? redacted : maskSecrets(value)
    case "number":
      return Number.isFinite(value) ? value : null
    case "boolean":
      return value
    case "bigint":
      return value.toString()
    case "object":
      break
    default:
      return undefined
  }
  if (value === null) return null
  if (Redacted.isRedacted(value)) return redacted
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString()
  if (seen.has(value)) return "<circular>"
  if (depth >= maxDepth) return "<truncated>"
  seen.add(value)
  const result = Array.isArray(value)
    ? value.map((item) => sanitizeValue(item, depth + 1, seen) ?? null)
    : sanitizeObject(value as Record<string, unknown>, depth + 1, seen)
  seen.delete(value)
  return result
}

const sanitizeObject = (value: Readonly<Record<string, unknown>>, depth: number, seen: Set<object>) => {
  const result: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const clean = isSensitiveKey(key) ? redacted : sanitizeValue(value[key], depth, seen)
    if (clean !== undefined) result[key] = clean
  }
  return result
}

// ---------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------

/** A sink could not take a record. The message names the chain and seq, never the record's details. */
export class AuditSinkError extends Data.TaggedError("AuditSinkError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Where records go. `write` takes one record synchronously, in `seq` order within a chain, and throws
 * (an `AuditSinkError` to say why) when it cannot; a slow backend buffers and sends later, as `gcpSink` does.
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

interface ChainState {
  readonly name: string
  seq: number
  last: string
}

const errorMessage = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

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
    const chains = new Map<string, ChainState>()
    const chainOf = (tenantId: string) => {
      let chain = chains.get(tenantId)
      if (chain === undefined) {
        chain = { name: `${tenantId}/${processId}`, seq: 0, last: genesisHash }
        chains.set(tenantId, chain)
      }
      return chain
    }
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
          const chain = chainOf(entry.tenant_id)
          const unhashed = {
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
            chain: chain.name,
            seq: chain.seq + 1,
            prev_hash: chain.last
          }
          record = { ...unhashed, hash: sha256Hex(canonicalJson(unhashed)) }
          chain.seq = record.seq
          chain.last = record.hash
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

// ---------------------------------------------------------------------------------------------------------------
// stdout: Cloud Logging structured JSON lines
// ---------------------------------------------------------------------------------------------------------------

/** Cloud Logging severities of the records. */
export type AuditSeverity = "INFO" | "NOTICE" | "WARNING"

/**
 * `ok` is `INFO`, `failed` is `WARNING`. `denied` is `NOTICE`: a refusal is a control doing its job
 * (a bad token from a scanner, a tool the tenant may not use), significant for an audit but not a fault, so
 * an alert on `severity>=WARNING` stays about failures; select denials with `labels.outcome="denied"`.
 */
export const severityOf = (outcome: AuditOutcome): AuditSeverity =>
  outcome === "ok" ? "INFO" : outcome === "denied" ? "NOTICE" : "WARNING"

/** `tool.invoke tool:slack.post_message ok`. */
export const messageOf = (record: AuditRecord): string => `${record.action} ${record.target} ${record.outcome}`

/** The labels of a record in Cloud Logging: tenant, action and outcome, to filter and count on. */
export const labelsOf = (
  record: AuditRecord
): { readonly tenant_id: string; readonly action: AuditAction; readonly outcome: AuditOutcome } => ({
  tenant_id: record.tenant_id,
  action: record.action,
  outcome: record.outcome
})

/** `projects/<project>/traces/<trace_id>` when the project is known, else the bare trace id. */
export const traceOf = (traceId: string, projectId: string | undefined): string =>
  projectId === undefined ? traceId : `projects/${projectId}/traces/${traceId}`

/**
 * A record as one line of Cloud Logging structured logging (https://cloud.google.com/logging/docs/structured-logging):
 * `severity`, `message`, `time`, `logging.googleapis.com/labels`, `logging.googleapis.com/trace` (when the record
 * has a trace) and the whole record under `audit`, which the logging agent keeps as `jsonPayload.audit`.
 */
export const structuredLogLine = (record: AuditRecord, projectId?: string): Record<string, unknown> => ({
  severity: severityOf(record.outcome),
  message: messageOf(record),
  time: record.time,
  "logging.googleapis.com/labels": labelsOf(record),
  ...(record.trace_id === undefined ? {} : { "logging.googleapis.com/trace": traceOf(record.trace_id, projectId) }),
  audit: record
})

/** Options of `stdoutSink`. */
export interface StdoutSinkOptions {
  /** The Google Cloud project, to write traces as `projects/<project>/traces/<id>`. */
  readonly projectId?: string | undefined
  /** Where lines go; `process.stdout.write` by default. */
  readonly write?: (line: string) => void
}

/**
 * One JSON line per record on stdout (`structuredLogLine`), written directly with one `process.stdout.write`
 * per line rather than through the Effect logger, so `LOG_LEVEL` and `LOG_FORMAT` never hide or reshape them.
 */
export const stdoutSink = (options: StdoutSinkOptions = {}): AuditSink => ({
  name: "stdout",
  write: (record) => {
    try {
      const line = `${JSON.stringify(structuredLogLine(record, options.projectId))}\n`
      if (options.write) options.write(line)
      else process.stdout.write(line)
    } catch (cause) {
      throw new AuditSinkError({
        message: `stdout: cannot write ${record.chain} #${record.seq}: ${errorMessage(cause)}`
      })
    }
  }
})

// ---------------------------------------------------------------------------------------------------------------
// memory and none
// ---------------------------------------------------------------------------------------------------------------

/** The records of an in-memory audit log, in the order they were written. */
export class AuditMemory extends Context.Tag("@altan/cluster/AuditMemory")<AuditMemory, {
  /** A copy of the records so far. */
  readonly records: () => ReadonlyArray<AuditRecord>
  readonly clear: () => void
}>() {}

/** Keeps every record in process memory: for tests. */
export const memorySink = (): AuditSink & AuditMemory["Type"] => {
  const records: Array<AuditRecord> = []
  return {
    name: "memory",
    write: (record) => void records.push(record),
    records: () => records.slice(),
    clear: () => void records.splice(0)
  }
}

/** Writes nothing; the chains are still kept and the records counted in the metrics. */
export const noneSink: AuditSink = { name: "none", write: () => undefined }

/** An audit log in memory, and its records: for tests. */
export const layerMemory: Layer.Layer<AuditLog | AuditMemory> = Layer.effectContext(Effect.gen(function*() {
  const memory = memorySink()
  const service = yield* make(memory)
  return Context.make(AuditLog, service).pipe(
    Context.add(AuditMemory, AuditMemory.of({ records: memory.records, clear: memory.clear }))
  )
}))

// ---------------------------------------------------------------------------------------------------------------
// Cloud Logging API
// ---------------------------------------------------------------------------------------------------------------

/**
 * Options of the `Logging` client: credentials (Application Default Credentials by default), and to reach
 * another endpoint over HTTP/JSON `fallback: true`, `apiEndpoint`, `port`, `protocol` and an `authClient`.
 */
export type GcpClientOptions = LoggingOptions & {
  readonly fallback?: boolean
  readonly port?: number
  readonly protocol?: "http" | "https"
}

/** Options of `gcpSink`. */
export interface GcpSinkOptions {
  /** The project the log belongs to: `projects/<projectId>/logs/<logName>`. */
  readonly projectId: string
  /** `altan-audit` by default. */
  readonly logName?: string
  /** The monitored resource of the entries; detected by the client (GKE container, GCE...) when absent. */
  readonly resource?: MonitoredResource
  readonly client?: GcpClientOptions
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
export const gcpSink = (options: GcpSinkOptions): Effect.Effect<AuditSink, AuditSinkError, Scope.Scope> =>
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
    const log = logging.log(options.logName ?? defaults.logName)
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

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

/** Where records go, as the environment says (`loadConfig`). */
export type AuditConfig =
  /** `AUDIT_SINK=stdout` (default): JSON lines for Cloud Logging's agent or any log collector. */
  | { readonly sink: "stdout"; readonly projectId: string | undefined }
  /** `AUDIT_SINK=gcp`: the Cloud Logging API, log `AUDIT_LOG_NAME` of `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT`. */
  | { readonly sink: "gcp"; readonly projectId: string; readonly logName: string }
  /** `AUDIT_SINK=none`: nothing is written. */
  | { readonly sink: "none" }

export const defaults = {
  sink: "stdout",
  logName: "altan-audit"
} as const

const sinkConfig = Config.literal("stdout", "gcp", "none")("AUDIT_SINK").pipe(
  Config.withDefault(defaults.sink),
  Config.withDescription("Where audit records go: stdout (default, JSON lines), gcp (Cloud Logging API), none.")
)

const logNameConfig = Config.string("AUDIT_LOG_NAME").pipe(
  Config.withDefault(defaults.logName),
  Config.validate({
    message: "AUDIT_LOG_NAME must be 1 to 512 letters, digits, '.', '_' or '-'",
    validation: (name) => /^[A-Za-z0-9._-]{1,512}$/.test(name)
  }),
  Config.withDescription("The Cloud Logging log of the audit records (AUDIT_SINK=gcp), altan-audit by default.")
)

/** The same project settings, in the same order, as the Secret Manager store. */
const projectConfig = Config.nonEmptyString("GCP_PROJECT").pipe(
  Config.orElse(() => Config.nonEmptyString("GOOGLE_CLOUD_PROJECT")),
  Config.withDescription(
    "Google Cloud project of the audit log and of the traces (GCP_PROJECT or GOOGLE_CLOUD_PROJECT)."
  )
)

/** Reads `AUDIT_SINK`, `AUDIT_LOG_NAME` and `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT` (required by `gcp`). */
export const loadConfig: Effect.Effect<AuditConfig, ConfigError.ConfigError> = Effect.gen(function*() {
  const sink = yield* sinkConfig
  switch (sink) {
    case "stdout":
      return { sink, projectId: Option.getOrUndefined(yield* Config.option(projectConfig)) }
    case "gcp":
      return { sink, projectId: yield* projectConfig, logName: yield* logNameConfig }
    case "none":
      return { sink }
  }
})

/** The `AuditLog` the environment asks for (`loadConfig`). */
export const layerFromConfig: Layer.Layer<AuditLog, ConfigError.ConfigError> = Layer.scoped(
  AuditLog,
  Effect.gen(function*() {
    const config = yield* loadConfig
    const sink = yield* sinkOf(config)
    const service = yield* make(sink)
    // reported from the start at 0, so an alert on its increase sees the first failure
    yield* Metric.incrementBy(Metrics.withTags(Metrics.auditSinkFailuresKey, { sink: sink.name }), 0)
    if (config.sink === "gcp") {
      yield* Effect.logInfo(`audit records to Cloud Logging: projects/${config.projectId}/logs/${config.logName}`)
    } else if (config.sink === "none") {
      yield* Effect.logWarning("audit records are not written (AUDIT_SINK=none)")
    }
    return service
  })
)

const sinkOf = (config: AuditConfig): Effect.Effect<AuditSink, ConfigError.ConfigError, Scope.Scope> => {
  switch (config.sink) {
    case "stdout":
      return Effect.succeed(stdoutSink({ projectId: config.projectId }))
    case "gcp":
      return gcpSink({ projectId: config.projectId, logName: config.logName }).pipe(
        Effect.mapError((error) => ConfigError.InvalidData(["AUDIT_SINK"], error.message))
      )
    case "none":
      return Effect.succeed(noneSink)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------------------------

/** Why a chain is broken at a record. `missing seq N`: record N is absent (deleted, or lost by a sink). */
export type BreakReason =
  | "hash mismatch"
  | "prev_hash mismatch"
  | "malformed record"
  | "duplicate seq"
  | `missing seq ${number}`

/** The first broken link of a chain. */
export interface ChainBreak {
  /** The chain; `(unknown)` for a malformed record that names none. */
  readonly chain: string
  /** The seq of the offending record (of the missing one for `missing seq N`), when it has one. */
  readonly seq: number | undefined
  readonly reason: BreakReason
  /** Position of the offending item in the input (0-based), absent for `missing seq N`. */
  readonly index: number | undefined
}

/** What `verify` found in a chain. */
export interface ChainSummary {
  readonly chain: string
  /** Well-formed, distinct records. */
  readonly records: number
  readonly firstSeq: number | undefined
  readonly lastSeq: number | undefined
  /** The newest hash: compare it with a later run to notice records removed from the end. */
  readonly lastHash: string | undefined
  readonly ok: boolean
}

export interface VerifyResult {
  readonly ok: boolean
  /** Items read, well-formed or not. */
  readonly records: number
  readonly chains: ReadonlyArray<ChainSummary>
  /** The first broken link of each broken chain; empty when `ok`. */
  readonly breaks: ReadonlyArray<ChainBreak>
}

export interface VerifyOptions {
  /**
   * Chains may start at any seq (an export of a time window, or after retention dropped older entries); the
   * first record's `prev_hash` is then taken on trust. By default a chain must start at seq 1.
   */
  readonly partial?: boolean
}

const unknownChain = "(unknown)"
const hex64 = /^[0-9a-f]{64}$/
const isAuditRecord = Schema.is(AuditRecord)

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * The audit record in an item: the item itself, the `audit` of a stdout line, or the `jsonPayload` of a Cloud
 * Logging export (`jsonPayload.audit` for exported stdout lines).
 */
export const recordOf = (value: unknown): unknown => {
  if (!isObject(value)) return value
  if (isObject(value.audit)) return value.audit
  if (isObject(value.jsonPayload)) return recordOf(value.jsonPayload)
  return value
}

interface Item {
  readonly index: number
  readonly seq: number | undefined
  /** `undefined` when malformed. */
  readonly record: AuditRecord | undefined
}

const wellFormed = (value: unknown): value is AuditRecord =>
  isAuditRecord(value) && value.seq >= 1 && hex64.test(value.hash) && hex64.test(value.prev_hash)

/**
 * Checks every chain in `records` (any order; raw records, stdout lines or Cloud Logging entries): seqs
 * continuous from 1, each `prev_hash` equal to the previous record's `hash`, each `hash` that of its record.
 * Reports the first broken link of each chain; identical duplicates (an entry delivered twice) are ignored.
 */
export const verify = (records: Iterable<unknown>, options: VerifyOptions = {}): VerifyResult => {
  const chains = new Map<string, Array<Item>>()
  let count = 0
  for (const value of records) {
    const index = count++
    const candidate = recordOf(value)
    const item: Item = wellFormed(candidate)
      ? { index, seq: candidate.seq, record: candidate }
      : {
        index,
        seq: isObject(candidate) && typeof candidate.seq === "number" ? candidate.seq : undefined,
        record: undefined
      }
    const chain = item.record?.chain ??
      (isObject(candidate) && typeof candidate.chain === "string" ? candidate.chain : unknownChain)
    const items = chains.get(chain)
    if (items) items.push(item)
    else chains.set(chain, [item])
  }

  const summaries: Array<ChainSummary> = []
  const breaks: Array<ChainBreak> = []
  for (const chain of [...chains.keys()].sort()) {
    const items = chains.get(chain)!.sort((a, b) => (a.seq ?? -Infinity) - (b.seq ?? -Infinity) || a.index - b.index)
    const broken = walk(chain, items, options.partial === true)
    const distinct = new Map<number, AuditRecord>()
    for (const item of items) {
      if (item.record && !distinct.has(item.record.seq)) distinct.set(item.record.seq, item.record)
    }
    const seqs = [...distinct.keys()]
    const last = seqs.length === 0 ? undefined : distinct.get(seqs[seqs.length - 1]!)
    summaries.push({
      chain,
      records: distinct.size,
      firstSeq: seqs[0],
      lastSeq: last?.seq,
      lastHash: last?.hash,
      ok: broken === undefined
    })
    if (broken) breaks.push(broken)
  }
  return { ok: breaks.length === 0, records: count, chains: summaries, breaks }
}

/** The first broken link of one chain's items, sorted by seq. */
const walk = (chain: string, items: ReadonlyArray<Item>, partial: boolean): ChainBreak | undefined => {
  const at = (item: Item, reason: BreakReason): ChainBreak => ({ chain, seq: item.seq, reason, index: item.index })
  let expected = partial && items[0]?.seq !== undefined ? items[0].seq : 1
  let previous: AuditRecord | undefined
  for (const item of items) {
    if (previous && item.seq === previous.seq) {
      if (item.record && canonicalJson(item.record) === canonicalJson(previous)) continue
      return at(item, item.record ? "duplicate seq" : "malformed record")
    }
    if (item.seq !== undefined && Number.isInteger(item.seq) && item.seq > expected) {
      return { chain, seq: expected, reason: `missing seq ${expected}`, index: undefined }
    }
    const record = item.record
    if (record === undefined) return at(item, "malformed record")
    if (recordHash(record) !== record.hash) return at(item, "hash mismatch")
    const prevHash = previous?.hash ?? (record.seq === 1 ? genesisHash : undefined)
    if (prevHash !== undefined && record.prev_hash !== prevHash) return at(item, "prev_hash mismatch")
    previous = record
    expected = record.seq + 1
  }
  return undefined
}

/** One item of an audit export, and where it was (`line 7`, `entry 3`). */
export interface ExportItem {
  readonly where: string
  readonly value: unknown
}

/**
 * The items of an audit export: JSON lines (raw records, stdout sink lines or Cloud Logging entries; a line
 * that is not JSON is kept as a string, which `verify` reports as malformed), or a JSON array of entries as
 * `gcloud logging read --format=json` prints them.
 */
export const parseExport = (text: string): Array<ExportItem> => {
  const trimmed = text.trim()
  if (trimmed.startsWith("[")) {
    try {
      const array: unknown = JSON.parse(trimmed)
      if (Array.isArray(array)) return array.map((value, i) => ({ where: `entry ${i + 1}`, value }))
    } catch {
      // not one JSON array: read it as lines
    }
  }
  const items: Array<ExportItem> = []
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (line.trim() === "") continue
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      value = line
    }
    items.push({ where: `line ${i + 1}`, value })
  }
  return items
}

/** A human summary of `verify`'s result; `where` names an input position (`line 7`). */
export const formatReport = (
  result: VerifyResult,
  where: (index: number) => string = (i) => `item ${i + 1}`
): string => {
  const broken = result.breaks.length
  const lines = [
    `${result.records} records in ${result.chains.length} chain${result.chains.length === 1 ? "" : "s"}: ${
      broken === 0 ? "all chains verify" : `${broken} broken chain${broken === 1 ? "" : "s"}`
    }`
  ]
  const breakOf = new Map(result.breaks.map((b) => [b.chain, b]))
  for (const chain of result.chains) {
    const found = breakOf.get(chain.chain)
    if (found) {
      lines.push(
        `BROKEN ${found.chain} at seq ${found.seq ?? "?"}: ${found.reason}${
          found.index === undefined ? "" : ` (${where(found.index)})`
        }`
      )
    } else {
      lines.push(
        `ok     ${chain.chain} seq ${chain.firstSeq}..${chain.lastSeq} (${chain.records}) last ${chain.lastHash}`
      )
    }
  }
  return lines.join("\n")
}
