import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { makeBreaker } from "../src/Breaker.js"
import * as Resilience from "../src/Resilience.js"

const config = { ...Resilience.defaults, breakerThreshold: 3, breakerCooldown: Resilience.defaults.breakerCooldown }

describe("Breaker", () => {
  it.effect("opens after the threshold, fails fast through the cooldown, then lets exactly one probe through", () =>
    Effect.gen(function*() {
      const reports: Array<boolean> = []
      const breaker = makeBreaker(config, (open) => Effect.sync(() => void reports.push(open)))
      for (let i = 0; i < 2; i++) {
        expect(yield* breaker.admit).toEqual({ ok: true, probe: false })
        yield* breaker.failure
      }
      expect(yield* breaker.admit).toEqual({ ok: true, probe: false })
      yield* breaker.failure
      expect(reports).toEqual([true])
      expect(yield* breaker.admit).toEqual({ retryAfterMs: 30_000 })
      yield* TestClock.adjust("29999 millis")
      expect(yield* breaker.admit).toEqual({ retryAfterMs: 1 })
      yield* TestClock.adjust("1 millis")
      expect(yield* breaker.admit).toEqual({ ok: true, probe: true })
      // while the probe is out, others come back in a second
      expect(yield* breaker.admit).toEqual({ retryAfterMs: 1_000 })
      yield* breaker.success
      expect(reports).toEqual([true, false])
      expect(yield* breaker.admit).toEqual({ ok: true, probe: false })
    }))

  it.effect("a failed probe re-opens for a whole cooldown; an abandoned one lets the next call probe", () =>
    Effect.gen(function*() {
      const breaker = makeBreaker(config)
      for (let i = 0; i < 3; i++) yield* breaker.failure
      yield* TestClock.adjust("30 seconds")
      expect(yield* breaker.admit).toEqual({ ok: true, probe: true })
      yield* breaker.abandon
      expect(yield* breaker.admit).toEqual({ ok: true, probe: true })
      yield* TestClock.adjust("5 seconds")
      yield* breaker.failure
      expect(yield* breaker.admit).toEqual({ retryAfterMs: 30_000 })
    }))

  it.effect("successes in between reset the count: failures must be consecutive", () =>
    Effect.gen(function*() {
      const breaker = makeBreaker(config)
      yield* breaker.failure
      yield* breaker.failure
      yield* breaker.success
      yield* breaker.failure
      yield* breaker.failure
      expect(yield* breaker.admit).toEqual({ ok: true, probe: false })
      yield* breaker.failure
      expect("retryAfterMs" in (yield* breaker.admit)).toBe(true)
    }))

  it.effect("a breaker stopped while open reports itself closed", () =>
    Effect.gen(function*() {
      const reports: Array<boolean> = []
      const breaker = makeBreaker(config, (open) => Effect.sync(() => void reports.push(open)))
      yield* breaker.stop
      expect(reports).toEqual([])
      for (let i = 0; i < 3; i++) yield* breaker.failure
      yield* breaker.stop
      expect(reports).toEqual([true, false])
    }))
})
