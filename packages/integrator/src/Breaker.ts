import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { ResilienceConfig } from "./Resilience.js"

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

/** A circuit breaker of one connection. */
export type Breaker = ReturnType<typeof makeBreaker>
