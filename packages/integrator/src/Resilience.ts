import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Layer from "effect/Layer"

/** How connections retry upstream calls and when they stop calling a failing upstream. */
export class ResilienceConfig extends Context.Tag("@altan/integrator/ResilienceConfig")<ResilienceConfig, {
  /** `TOOL_MAX_ATTEMPTS`: tries per tool call when the tool does not set `max_attempts`. */
  readonly maxAttempts: number
  /** `TOOL_RETRY_BASE_DELAY`: the first backoff's ceiling; it doubles per attempt (full jitter). */
  readonly baseDelay: Duration.Duration
  /** `TOOL_RETRY_MAX_DELAY`: no backoff is longer. */
  readonly maxDelay: Duration.Duration
  /** `TOOL_MAX_RETRY_AFTER`: a `Retry-After` longer than this is not waited out; the call fails instead. */
  readonly maxRetryAfter: Duration.Duration
  /** `BREAKER_FAILURE_THRESHOLD`: consecutive failed attempts that open a connection's circuit. */
  readonly breakerThreshold: number
  /** `BREAKER_COOLDOWN`: how long an open circuit fails fast before one probe may go through. */
  readonly breakerCooldown: Duration.Duration
}>() {}

export const defaults: ResilienceConfig["Type"] = {
  maxAttempts: 3,
  baseDelay: Duration.millis(200),
  maxDelay: Duration.seconds(10),
  maxRetryAfter: Duration.seconds(30),
  breakerThreshold: 5,
  breakerCooldown: Duration.seconds(30)
}

export const layer = (options?: Partial<ResilienceConfig["Type"]>): Layer.Layer<ResilienceConfig> =>
  Layer.succeed(ResilienceConfig, { ...defaults, ...options })

export const layerConfig: Layer.Layer<ResilienceConfig, ConfigError.ConfigError> = Layer.effect(
  ResilienceConfig,
  Config.all({
    maxAttempts: Config.integer("TOOL_MAX_ATTEMPTS").pipe(Config.withDefault(defaults.maxAttempts)),
    baseDelay: Config.duration("TOOL_RETRY_BASE_DELAY").pipe(Config.withDefault(defaults.baseDelay)),
    maxDelay: Config.duration("TOOL_RETRY_MAX_DELAY").pipe(Config.withDefault(defaults.maxDelay)),
    maxRetryAfter: Config.duration("TOOL_MAX_RETRY_AFTER").pipe(Config.withDefault(defaults.maxRetryAfter)),
    breakerThreshold: Config.integer("BREAKER_FAILURE_THRESHOLD").pipe(Config.withDefault(defaults.breakerThreshold)),
    breakerCooldown: Config.duration("BREAKER_COOLDOWN").pipe(Config.withDefault(defaults.breakerCooldown))
  })
)
