/**
 * Where this process's audit records go, from the environment: `AUDIT_SINK` (`stdout`, `gcp`, `none`),
 * `AUDIT_LOG_NAME` and `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT`. `layerFromConfig` is the `AuditLog` a runner uses.
 */
import * as Metrics from "@altan/domain/Metrics"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { AuditLog, type AuditSink, make, noneSink } from "./AuditLog.js"
import * as GcpSink from "./GcpSink.js"
import * as StdoutSink from "./StdoutSink.js"

/** Where records go, as the environment says (`loadConfig`). */
export type AuditConfig =
  /** `AUDIT_SINK=stdout` (default): JSON lines for Cloud Logging's agent or any log collector. */
  | { readonly sink: "stdout"; readonly projectId: string | undefined }
  /** `AUDIT_SINK=gcp`: the Cloud Logging API, log `AUDIT_LOG_NAME` of `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT`. */
  | { readonly sink: "gcp"; readonly projectId: string; readonly logName: string }
  /** `AUDIT_SINK=none`: nothing is written. */
  | { readonly sink: "none" }

/** What applies when a variable is not set. */
export const defaults = {
  sink: "stdout",
  logName: GcpSink.defaultLogName
} as const

/** `AUDIT_LOG_NAME`: the log's name in Cloud Logging, as its API accepts it. */
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

/** `AUDIT_SINK`: `stdout`, `gcp` or `none`. */
const sinkConfig = Config.literal("stdout", "gcp", "none")("AUDIT_SINK").pipe(
  Config.withDefault(defaults.sink),
  Config.withDescription("Where audit records go: stdout (default, JSON lines), gcp (Cloud Logging API), none.")
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
      return Effect.succeed(StdoutSink.make({ projectId: config.projectId }))
    case "gcp":
      return GcpSink.make({ projectId: config.projectId, logName: config.logName }).pipe(
        Effect.mapError((error) => ConfigError.InvalidData(["AUDIT_SINK"], error.message))
      )
    case "none":
      return Effect.succeed(noneSink)
  }
}
