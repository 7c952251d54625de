import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/** The span a log line was written in, if any: its trace links the line to the task's trace. */
const spanOf = (context: FiberRefs.FiberRefs): Tracer.AnySpan | undefined =>
  Option.getOrUndefined(
    Option.flatMap(FiberRefs.get(context, FiberRef.currentContext), Context.getOption(Tracer.ParentSpan))
  )

const errorToJson = (u: unknown): unknown =>
  u instanceof Error && !("toJSON" in u) ? { ...u, name: u.name, message: u.message } : u

/** Effect's structured fields (`message`, `logLevel`, `timestamp`, `cause`, `annotations`, `spans`, `fiberId`). */
const structured = (options: Logger.Logger.Options<unknown>) => {
  const log = Logger.structuredLogger.log(options)
  return { ...log, message: Array.isArray(log.message) ? log.message.map(errorToJson) : errorToJson(log.message) }
}

/** One JSON object a line: Effect's structured fields plus `trace_id` and `span_id` of the current span. */
export const jsonLogger: Logger.Logger<unknown, string> = Logger.make((options) => {
  const span = spanOf(options.context)
  return Inspectable.stringifyCircular({
    ...structured(options),
    ...(span ? { trace_id: span.traceId, span_id: span.spanId } : {})
  })
})

const severities: Record<LogLevel.LogLevel["_tag"], string> = {
  All: "DEFAULT",
  Trace: "DEBUG",
  Debug: "DEBUG",
  Info: "INFO",
  Warning: "WARNING",
  Error: "ERROR",
  Fatal: "CRITICAL",
  None: "DEFAULT"
}

/**
 * Cloud Logging's structured format (what its agents read from stdout): `severity`, `message`, `time`, and the
 * current span as `logging.googleapis.com/trace` (`projects/<project>/traces/<id>` when the project is known),
 * `logging.googleapis.com/spanId` and `logging.googleapis.com/trace_sampled`, so the line shows in its trace.
 */
export const gcpLogger = (project: Option.Option<string>): Logger.Logger<unknown, string> =>
  Logger.make((options) => {
    const { cause, logLevel: _, message, timestamp, ...rest } = structured(options)
    const span = spanOf(options.context)
    const text = typeof message === "string" ? message : Inspectable.stringifyCircular(message)
    return Inspectable.stringifyCircular({
      severity: severities[options.logLevel._tag],
      message: cause === undefined ? text : `${text}\n${cause}`,
      time: timestamp,
      ...rest,
      ...(span
        ? {
          "logging.googleapis.com/trace": Option.match(project, {
            onNone: () => span.traceId,
            onSome: (id) => `projects/${id}/traces/${span.traceId}`
          }),
          "logging.googleapis.com/spanId": span.spanId,
          "logging.googleapis.com/trace_sampled": span.sampled
        }
        : {})
    })
  })

/**
 * `LOG_LEVEL` (default info) and `LOG_FORMAT`: `pretty` (default), `json` (one JSON object a line, with the
 * `trace_id` and `span_id` of the span it was written in), `gcp` (Cloud Logging's structured format, linked to the
 * trace in the project `GCP_PROJECT` or `GOOGLE_CLOUD_PROJECT`) or `logfmt`. Logs go to stderr, in every format: stdout
 * is the audit log's (`AUDIT_SINK=stdout`), so a process's stdout is its audit records and nothing else.
 */
export const LoggingLive = Layer.unwrapEffect(Effect.gen(function*() {
  const level = yield* Config.logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info))
  const format = yield* Config.literal("pretty", "json", "gcp", "logfmt")("LOG_FORMAT").pipe(
    Config.withDefault("pretty" as const)
  )
  const project = yield* Config.string("GCP_PROJECT").pipe(
    Config.orElse(() => Config.string("GOOGLE_CLOUD_PROJECT")),
    Config.option
  )
  const logger = Logger.replace(
    Logger.defaultLogger,
    format === "json"
      ? Logger.withConsoleError(jsonLogger)
      : format === "gcp"
      ? Logger.withConsoleError(gcpLogger(project))
      : format === "logfmt"
      ? Logger.withConsoleError(Logger.logfmtLogger)
      : Logger.prettyLogger({ stderr: true })
  )
  return Layer.merge(logger, Logger.minimumLogLevel(level))
})).pipe(Layer.orDie)
