import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"

/** `LOG_LEVEL` (default info) and `LOG_FORMAT` (`pretty` default, `json` for log collectors). */
export const LoggingLive = Layer.unwrapEffect(Effect.gen(function*() {
  const level = yield* Config.logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info))
  const format = yield* Config.literal("pretty", "json", "logfmt")("LOG_FORMAT").pipe(
    Config.withDefault("pretty" as const)
  )
  const logger = format === "json" ? Logger.json : format === "logfmt" ? Logger.logFmt : Logger.pretty
  return Layer.merge(logger, Logger.minimumLogLevel(level))
})).pipe(Layer.orDie)
