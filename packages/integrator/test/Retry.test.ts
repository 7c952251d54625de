import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as Retry from "../src/Retry.js"

interface Failure {
  readonly retryable: boolean
  readonly retryAfterMs?: number
  readonly elsewhere?: boolean
}

const policy = (options: Partial<Retry.Policy<Failure>> = {}): Retry.Policy<Failure> => ({
  maxAttempts: 3,
  baseDelay: "200 millis",
  maxDelay: "10 seconds",
  maxWait: "30 seconds",
  retryable: (f) => f.retryable,
  retryAfter: (f) => f.retryAfterMs,
  waitedElsewhere: (f) => f.elsewhere === true,
  ...options
})

/** An attempt that fails with `failures[n - 1]` and succeeds once they run out, noting when each attempt started. */
const attempts = (failures: ReadonlyArray<Failure>) => {
  const startedAt: Array<number> = []
  const attempt = (n: number) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      startedAt.push(now)
      const failure = failures[n - 1]
      return failure === undefined ? Effect.succeed(`ok at ${n}`) : Effect.fail(failure)
    })
  return { attempt, startedAt }
}

describe("Retry", () => {
  it.effect("an upstream's Retry-After is waited out to the millisecond, then the next attempt answers", () =>
    Effect.gen(function*() {
      const { attempt, startedAt } = attempts([{ retryable: true, retryAfterMs: 5_000 }])
      const fiber = yield* Effect.fork(Retry.retry(attempt, policy()))
      yield* TestClock.adjust("4999 millis")
      expect(startedAt).toEqual([0])
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toEqual({ value: "ok at 2", attempts: 2 })
      expect(startedAt).toEqual([0, 5_000])
    }))

  it.effect("without Retry-After, full jitter: each wait is below base * 2^(attempt - 1)", () =>
    Effect.gen(function*() {
      const { attempt, startedAt } = attempts([{ retryable: true }, { retryable: true }])
      const fiber = yield* Effect.fork(Retry.retry(attempt, policy()))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toEqual({ value: "ok at 3", attempts: 3 })
      expect(startedAt[1]! - startedAt[0]!).toBeLessThan(200)
      expect(startedAt[2]! - startedAt[1]!).toBeLessThan(400)
    }))

  it.effect("a wait served elsewhere (the rate budget) is not slept here", () =>
    Effect.gen(function*() {
      const { attempt, startedAt } = attempts([{ retryable: true, retryAfterMs: 5_000, elsewhere: true }])
      expect(yield* Retry.retry(attempt, policy())).toEqual({ value: "ok at 2", attempts: 2 })
      expect(startedAt).toEqual([0, 0])
    }))

  it.effect("gives up: not retryable, out of attempts, a wait over maxWait, a wait past the deadline", () =>
    Effect.gen(function*() {
      const notRetryable = yield* Effect.either(Retry.retry(attempts([{ retryable: false }]).attempt, policy()))
      expect(notRetryable).toEqual(Either.left({ error: { retryable: false }, attempts: 1, reason: "not_retryable" }))

      const spent = yield* Effect.fork(Effect.either(Retry.retry(
        attempts([{ retryable: true }, { retryable: true }, { retryable: true }]).attempt,
        policy()
      )))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(spent)).toEqual(
        Either.left({ error: { retryable: true }, attempts: 3, reason: "attempts" })
      )

      // asked to wait 31 s with 30 s accepted: the caller hears it at once, served elsewhere or not
      for (const elsewhere of [false, true]) {
        const tooLong = yield* Effect.either(
          Retry.retry(attempts([{ retryable: true, retryAfterMs: 31_000, elsewhere }]).attempt, policy())
        )
        expect(tooLong).toEqual(Either.left({
          error: { retryable: true, retryAfterMs: 31_000, elsewhere },
          attempts: 1,
          reason: "wait",
          wait: Duration.millis(31_000)
        }))
      }

      const now = yield* Clock.currentTimeMillis
      const pastDeadline = yield* Effect.either(Retry.retry(
        attempts([{ retryable: true, retryAfterMs: 2_000 }]).attempt,
        policy({ deadline: now + 1_000 })
      ))
      expect(Either.isLeft(pastDeadline) && pastDeadline.left.reason).toBe("wait")
      // a deadline already behind (the caller stopped waiting) no longer bounds the retries
      const behind = yield* Effect.fork(Retry.retry(
        attempts([{ retryable: true, retryAfterMs: 2_000 }]).attempt,
        policy({ deadline: now - 1 })
      ))
      yield* TestClock.adjust("2 seconds")
      expect((yield* Fiber.join(behind)).attempts).toBe(2)
    }))

  it.effect("jitter stays under its ceiling, and the ceiling under maxDelay", () =>
    Effect.gen(function*() {
      for (let attempt = 1; attempt <= 12; attempt++) {
        for (let i = 0; i < 20; i++) {
          const wait = Duration.toMillis(
            yield* Retry.jitter({ baseDelay: "200 millis", maxDelay: "1 second" }, attempt)
          )
          expect(wait).toBeGreaterThanOrEqual(0)
          expect(wait).toBeLessThan(Math.min(1_000, 200 * 2 ** (attempt - 1)))
        }
      }
    }))
})
