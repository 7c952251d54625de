import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"

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

/** The wait before attempt `attempt + 1`: the upstream's `Retry-After` when it gave one, else full jitter. */
export const backoff = (
  config: Pick<ResilienceConfig["Type"], "baseDelay" | "maxDelay">,
  attempt: number,
  retryAfterMs: number | undefined
): Effect.Effect<number> =>
  retryAfterMs !== undefined
    ? Effect.succeed(retryAfterMs)
    : Effect.map(Random.next, (r) =>
      Math.floor(
        r * Math.min(Duration.toMillis(config.maxDelay), Duration.toMillis(config.baseDelay) * 2 ** (attempt - 1))
      ))

type BreakerState = "closed" | "open" | "half_open"

/**
 * A circuit breaker for one connection: it opens after `breakerThreshold` consecutive failed attempts,
 * fails fast for `breakerCooldown`, then lets exactly one probe through; the probe's outcome closes or
 * re-opens it. State is the actor's own, so there is one breaker per tenant and provider cluster-wide.
 * `report` hears each change between closed and not closed (the `altan_breaker_open` gauge).
 */
export const makeBreaker = (
  config: ResilienceConfig["Type"],
  report: (open: boolean) => Effect.Effect<void> = () => Effect.void
) => {
  let state: BreakerState = "closed"
  let failures = 0
  let openedAt = 0
  let probing = false
  const cooldown = Duration.toMillis(config.breakerCooldown)
  return {
    /** Whether a call may go now; when not, how long until a probe may. */
    admit: Effect.map(Clock.currentTimeMillis, (now): { readonly ok: true; readonly probe: boolean } | {
      readonly retryAfterMs: number
    } => {
      if (state === "closed") return { ok: true, probe: false }
      if (state === "open" && now - openedAt >= cooldown) {
        state = "half_open"
        probing = false
      }
      if (state === "half_open" && !probing) {
        probing = true
        return { ok: true, probe: true }
      }
      // while a probe is out, ask to come back in a second rather than "now"
      return { retryAfterMs: state === "half_open" ? 1000 : Math.max(1, openedAt + cooldown - now) }
    }),
    /**
     * The admitted call ended without saying anything about the upstream (interrupted, refused by the
     * budget, not configured): a probe it was gives way to the next call.
     */
    abandon: Effect.sync(() => {
      if (state === "half_open") probing = false
    }),
    /** The upstream answered (a 4xx included: it is up). */
    success: Effect.suspend(() => {
      const wasOpen = state !== "closed"
      state = "closed"
      failures = 0
      probing = false
      return wasOpen ? report(false) : Effect.void
    }),
    /** Its actor stops: a breaker that is not closed is reported closed, as nothing holds it open any more. */
    stop: Effect.suspend(() => (state === "closed" ? Effect.void : report(false))),
    /** The upstream failed in a way that says it is unwell (network, timeout, 5xx, 429). */
    failure: Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        failures++
        // a late failure of a call that started before the circuit opened does not extend the pause
        if (state === "half_open" || (state === "closed" && failures >= config.breakerThreshold)) {
          const opens = state === "closed"
          state = "open"
          openedAt = now
          probing = false
          return opens ? report(true) : Effect.void
        }
        return Effect.void
      }))
  }
}
