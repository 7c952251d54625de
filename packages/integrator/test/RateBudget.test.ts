import * as Metrics from "@altan/domain/Metrics"
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as RateBudget from "../src/RateBudget.js"
import * as VendorLimits from "../src/VendorLimits.js"

const DAY_AND_SLOT = 86_400_000 + 5 * 60_000

/** Acquires, then answers the (test) time at which the call started. */
const startedAt = (budget: RateBudget.RateBudget, request: RateBudget.AcquireRequest) =>
  Effect.zipRight(budget.acquire(request), Clock.currentTimeMillis)

/** Forks a call and lets it reach the queue before the next one. */
const queue = (budget: RateBudget.RateBudget, request: RateBudget.AcquireRequest, log?: Array<string>, name?: string) =>
  Effect.gen(function*() {
    const fiber = yield* startedAt(budget, request).pipe(
      Effect.tap(() => log !== undefined && name !== undefined ? Effect.sync(() => log.push(name)) : Effect.void),
      Effect.fork
    )
    yield* Effect.yieldNow()
    return fiber
  })

const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)

describe("RateBudget", () => {
  it.scoped("10/s with 100 concurrent callers: 10 starts in every second, all complete in 9 s", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 10, per_seconds: 1 }
      })
      const fiber = yield* Effect.forEach(
        Array.from({ length: 100 }, () => startedAt(budget, { priority: "async" })),
        (call) => call,
        { concurrency: "unbounded" }
      ).pipe(Effect.fork)
      yield* TestClock.adjust("20 seconds")
      const times = [...(yield* Fiber.join(fiber))].sort((a, b) => a - b)

      expect(times).toHaveLength(100)
      // the upstream never sees more than the budget in any second: every window [t, t + 1 s) that begins at a
      // start holds at most 10 starts (a window beginning elsewhere holds no more than the one at its first start)
      for (const t of times) expect(times.filter((x) => x >= t && x < t + 1000).length).toBeLessThanOrEqual(10)
      // and the budget is used in full: 10 at 0, 10 at 1000, ..., 10 at 9000
      expect(times).toEqual(times.map((_, i) => Math.floor(i / 10) * 1000))
      expect(times[99]).toBe(9000)
      const snapshot = yield* budget.snapshot()
      expect(snapshot.queued).toEqual({ sync: 0, async: 0 })
      // 10 starts at 9000 are in the window until 10000
      expect(snapshot.available).toBe(10)
    }))

  it.scoped("a window, not a bucket: the last start of the window, not a refill, lets the next call in", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 3, per_seconds: 1 }
      })
      expect((yield* budget.snapshot()).available).toBe(3)
      yield* budget.acquire({ priority: "sync" })
      yield* TestClock.adjust(400)
      yield* budget.acquire({ priority: "sync" })
      yield* budget.acquire({ priority: "sync" })
      expect((yield* budget.snapshot()).available).toBe(0)
      // starts at 0, 400, 400: the next when 0 leaves the window (a bucket would have refilled at 333 ms)
      const early = yield* Effect.either(budget.acquire({ priority: "sync", deadline: 999 }))
      expect(Either.isLeft(early) && early.left.retry_after_ms).toBe(600)
      // the 2nd and 3rd in line when the starts at 400 leave it; the 4th a window after the 1st
      const calls = [
        yield* queue(budget, { priority: "sync" }),
        yield* queue(budget, { priority: "sync" }),
        yield* queue(budget, { priority: "sync" })
      ]
      const fourth = yield* Effect.either(budget.acquire({ priority: "sync", deadline: 1999 }))
      expect(Either.isLeft(fourth) && fourth.left.retry_after_ms).toBe(1600)
      yield* TestClock.adjust(600)
      expect((yield* budget.snapshot()).available).toBe(0)
      yield* TestClock.adjust(400)
      expect(yield* Effect.forEach(calls, Fiber.join)).toEqual([1000, 1400, 1400])
      yield* TestClock.adjust(600)
      // the start at 1000 has left the window
      expect((yield* budget.snapshot()).available).toBe(1)
    }))

  it.scoped("sync calls go before async calls, first come first served within a priority", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      const order: Array<string> = []
      const fibers = [
        yield* queue(budget, { priority: "async" }, order, "a1"),
        yield* queue(budget, { priority: "async" }, order, "a2"),
        yield* queue(budget, { priority: "sync" }, order, "s1"),
        yield* queue(budget, { priority: "async" }, order, "a3"),
        yield* queue(budget, { priority: "sync" }, order, "s2")
      ]
      expect((yield* budget.snapshot()).queued).toEqual({ sync: 2, async: 3 })
      yield* TestClock.adjust("5 seconds")
      const times = yield* Effect.forEach(fibers, Fiber.join)
      expect(order).toEqual(["s1", "s2", "a1", "a2", "a3"])
      expect(times).toEqual([3000, 4000, 1000, 5000, 2000])
    }))

  it.scoped("a call that cannot start by its deadline fails at once with when it could have started", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      // the next start at 1000, when the one at 0 leaves the window
      const early = yield* Effect.either(budget.acquire({ priority: "sync", deadline: 500 }))
      expect(Either.isLeft(early) && early.left._tag).toBe("OverBudget")
      expect(Either.isLeft(early) && early.left.retry_after_ms).toBe(1000)
      // one sync call waits ahead: this one would start at 2000
      const ahead = yield* queue(budget, { priority: "sync" })
      const second = yield* Effect.either(budget.acquire({ priority: "sync", deadline: 1500 }))
      expect(Either.isLeft(second) && second.left.retry_after_ms).toBe(2000)
      // async calls waiting do not delay a sync one
      yield* queue(budget, { priority: "async" })
      const inTime = yield* queue(budget, { priority: "sync", deadline: 2000 })
      yield* TestClock.adjust("3 seconds")
      expect(yield* Fiber.join(ahead)).toBe(1000)
      expect(yield* Fiber.join(inTime)).toBe(2000)
    }))

  it.scoped("a waiting call gives up at its deadline when the budget stalls", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      const waiting = yield* queue(budget, { priority: "sync", deadline: 1200 })
      // a 429 pauses the budget past the deadline: the waiting call fails now, not at 1200
      yield* budget.observe({ status: 429, headers: { "Retry-After": "5" } })
      const result = yield* Fiber.await(waiting)
      expect(result._tag).toBe("Failure")
      expect(yield* Clock.currentTimeMillis).toBe(0)
      expect((yield* budget.snapshot()).queued.sync).toBe(0)
    }))

  it.scoped("a waiting call whose deadline passes fails at the deadline", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      const waiting = yield* queue(budget, { priority: "sync", deadline: 1000 })
      // the tenant slows the budget down: the start at 0 stays in the window until 10 s now
      yield* budget.reconfigure({ rate_limit: { requests: 1, per_seconds: 10 } })
      yield* TestClock.adjust(999)
      expect(yield* isDone(waiting)).toBe(false)
      yield* TestClock.adjust(1)
      const result = yield* Effect.either(Fiber.join(waiting))
      expect(Either.isLeft(result) && result.left.retry_after_ms).toBe(9000)
      expect((yield* budget.snapshot()).queued.sync).toBe(0)
    }))

  it.effect("closing the budget's scope interrupts the calls still waiting", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const budget = yield* Scope.extend(
        RateBudget.make({ tenant: "acme", provider: "test", rate_limit: { requests: 1, per_seconds: 1 } }),
        scope
      )
      yield* budget.acquire({ priority: "sync" })
      const waiting = yield* queue(budget, { priority: "async" })
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Fiber.await(waiting)
      expect(Exit.isInterrupted(exit)).toBe(true)
    }))

  it.scoped("waits are recorded in altan_rate_limit_wait_seconds by tenant and provider", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "metric-test",
        rate_limit: { requests: 1, per_seconds: 2 }
      })
      yield* budget.acquire({ priority: "sync" })
      const waiting = yield* queue(budget, { priority: "sync" })
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(waiting)
      const state = yield* Metric.value(
        Metrics.rateLimitWaitSeconds.pipe(Metric.tagged("tenant", "acme"), Metric.tagged("provider", "metric-test"))
      )
      expect(state.count).toBe(2)
      expect(state.sum).toBe(2)
      expect(state.max).toBe(2)
    }))

  it.scoped("429 with Retry-After: 2 pauses the whole budget for 2 seconds", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 10, per_seconds: 1 }
      })
      yield* budget.observe({ status: 429, headers: { "retry-after": "2" } })
      expect((yield* budget.snapshot()).paused_until).toBe(2000)
      const first = yield* queue(budget, { priority: "sync" })
      const second = yield* queue(budget, { priority: "sync" })
      yield* TestClock.adjust(1999)
      expect(yield* isDone(first)).toBe(false)
      yield* TestClock.adjust(1)
      // one call at the end of the pause, then the budget's average rate (see the next test)
      expect(yield* Fiber.join(first)).toBe(2000)
      yield* TestClock.adjust(100)
      expect(yield* Fiber.join(second)).toBe(2100)
    }))

  it.scoped("after a pause the budget resumes at its average rate, not with a full window", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 10, per_seconds: 1 }
      })
      yield* budget.observe({ status: 429, headers: { "retry-after": "2" } })
      // while paused, the window holds the paced starts: 1 call may go at 2000
      expect((yield* budget.snapshot()).available).toBe(1)
      const fiber = yield* Effect.forEach(
        Array.from({ length: 25 }, () => startedAt(budget, { priority: "async" })),
        (call) => call,
        { concurrency: "unbounded" }
      ).pipe(Effect.fork)
      yield* TestClock.adjust("10 seconds")
      const times = [...(yield* Fiber.join(fiber))].sort((a, b) => a - b)
      // one every 100 ms from the end of the pause while calls keep coming faster
      expect(times).toEqual(times.map((_, i) => 2000 + i * 100))
      for (const t of times) expect(times.filter((x) => x >= t && x < t + 1000).length).toBeLessThanOrEqual(10)
      // once they stop (the last started at 4400), the window empties and lets a full burst in again
      expect((yield* budget.snapshot()).available).toBe(10)
      const burst = yield* Effect.forEach(
        Array.from({ length: 10 }, () => startedAt(budget, { priority: "async" })),
        (call) => call,
        { concurrency: "unbounded" }
      )
      expect(burst).toEqual(Array.from({ length: 10 }, () => 10_000))
    }))

  it.scoped("Retry-After as an HTTP date; a 429 without any hint pauses the default second", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test" })
      yield* budget.observe({ status: 503, headers: { "Retry-After": "Thu, 01 Jan 1970 00:00:03 GMT" } })
      expect((yield* budget.snapshot()).paused_until).toBe(3000)
      yield* TestClock.adjust("3 seconds")
      yield* budget.observe({ status: 429, headers: {} })
      const call = yield* queue(budget, { priority: "async" })
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(call)).toBe(4000)
      // a 503 without Retry-After is not about the budget
      yield* budget.observe({ status: 503, headers: {} })
      expect((yield* budget.snapshot()).paused_until).toBe(null)
    }))

  it.scoped("X-RateLimit-Remaining: 0 with X-RateLimit-Reset pauses until the reset (epoch seconds or delta)", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_700_000_000_000)
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "github" })
      yield* budget.observe({
        status: 403,
        headers: { "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000005" }
      })
      expect((yield* budget.snapshot()).paused_until).toBe(1_700_000_005_000)
      const call = yield* queue(budget, { priority: "async" })
      yield* TestClock.adjust(4999)
      expect(yield* isDone(call)).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(call)).toBe(1_700_000_005_000)
      // small numbers are seconds from now
      yield* budget.observe({ status: 200, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": "3" } })
      expect((yield* budget.snapshot()).paused_until).toBe(1_700_000_008_000)
    }))

  it.scoped("a provider window with calls remaining is counted down, then paused until its reset", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test" })
      yield* budget.observe({ status: 200, headers: { "x-ratelimit-remaining": "2", "x-ratelimit-reset": "10" } })
      expect((yield* budget.snapshot()).provider_window).toEqual({ remaining: 2, reset_at: 10_000 })
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
      const third = yield* queue(budget, { priority: "sync" })
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(third)).toBe(10_000)
    }))

  it.scoped("HubSpot's window headers and daily headers", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "hubspot",
        ...VendorLimits.defaultsFor("hubspot")
      })
      yield* budget.observe({
        status: 200,
        headers: {
          "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
          "X-HubSpot-RateLimit-Max": "100",
          "X-HubSpot-RateLimit-Remaining": "0",
          "X-HubSpot-RateLimit-Daily": "250000",
          "X-HubSpot-RateLimit-Daily-Remaining": "249000"
        }
      })
      const snapshot = yield* budget.snapshot()
      expect(snapshot.paused_until).toBe(10_000)
      expect(snapshot.daily).toEqual({ used: 1000, limit: 250_000, reserve: 25_000 })
    }))

  it.scoped("Sforce-Limit-Info sets the daily allowance and usage; the reserve is for sync calls", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "salesforce",
        ...VendorLimits.defaultsFor("salesforce")
      })
      yield* budget.observe({ status: 200, headers: { "Sforce-Limit-Info": "api-usage=18/15000" } })
      expect((yield* budget.snapshot()).daily).toEqual({ used: 18, limit: 15_000, reserve: 1500 })
      yield* budget.acquire({ priority: "async" })
      expect((yield* budget.snapshot()).daily.used).toBe(19)
      // the org is at 13,500 of 15,000: async calls wait, sync calls spend the reserve
      yield* budget.observe({ status: 200, headers: { "sforce-limit-info": "api-usage=13500/15000" } })
      const background = yield* queue(budget, { priority: "async" })
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
      expect(yield* isDone(background)).toBe(false)
      // a lower count (calls aged out upstream) frees the allowance
      yield* budget.observe({ status: 200, headers: { "sforce-limit-info": "api-usage=9000/15000" } })
      expect(yield* Fiber.join(background)).toBe(0)
      expect((yield* budget.snapshot()).daily.used).toBe(9001)
    }))

  it.scoped("daily reserve: async calls queue in the last 10% while sync calls proceed", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test", daily_limit: 20 })
      for (let i = 0; i < 18; i++) yield* budget.acquire({ priority: "async" })
      // 2 left = the reserve (10% of 20): async waits, sync goes
      const background = yield* queue(budget, { priority: "async" })
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
      expect(yield* isDone(background)).toBe(false)
      expect((yield* budget.snapshot()).daily).toEqual({ used: 20, limit: 20, reserve: 2 })
      expect((yield* budget.snapshot()).queued.async).toBe(1)
    }))

  it.scoped("daily allowance spent: sync calls fail fast until it frees, async calls resume then", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test", daily_limit: 3 })
      yield* TestClock.adjust("1 minute")
      for (let i = 0; i < 3; i++) yield* budget.acquire({ priority: "sync" })
      const failed = yield* Effect.either(budget.acquire({ priority: "sync" }))
      // the calls were made in the slot starting at 0: they are forgotten at 24 h 5 min
      expect(Either.isLeft(failed) && failed.left.retry_after_ms).toBe(DAY_AND_SLOT - 60_000)
      const background = yield* queue(budget, { priority: "async" })
      yield* TestClock.adjust(DAY_AND_SLOT - 60_000 - 1)
      expect(yield* isDone(background)).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(background)).toBe(DAY_AND_SLOT)
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(DAY_AND_SLOT)
    }))

  it.scoped("sync calls waiting when the allowance runs out fail then", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        daily_limit: 2,
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      const calls = [
        yield* queue(budget, { priority: "sync" }),
        yield* queue(budget, { priority: "sync" }),
        yield* queue(budget, { priority: "sync" })
      ]
      yield* TestClock.adjust("2 seconds")
      const results = yield* Effect.forEach(calls, (f) => Effect.either(Fiber.join(f)))
      expect(results.map(Either.isRight)).toEqual([true, true, false])
      expect((yield* budget.snapshot()).queued.sync).toBe(0)
    }))

  it.scoped("an interrupted waiter leaves the queue and takes no start", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      const gone = yield* queue(budget, { priority: "sync" })
      const next = yield* queue(budget, { priority: "sync" })
      const last = yield* queue(budget, { priority: "async" })
      yield* Fiber.interrupt(gone)
      expect((yield* budget.snapshot()).queued).toEqual({ sync: 1, async: 1 })
      yield* TestClock.adjust("2 seconds")
      expect(yield* Fiber.join(next)).toBe(1000)
      expect(yield* Fiber.join(last)).toBe(2000)
      expect((yield* budget.snapshot()).daily.used).toBe(3)
    }))

  it.scoped("per-key windows: two Slack channels do not share their 1 message per second", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "slack", ...VendorLimits.defaultsFor("slack") })
      const a = RateBudget.keyOf("slack.post_message", { channel: "C1", text: "hi" })
      const b = RateBudget.keyOf("slack.post_message", { channel: "C2", text: "hi" })
      expect(a).toBe("channel:C1")
      const calls = [
        yield* queue(budget, { priority: "sync", key: a }),
        yield* queue(budget, { priority: "sync", key: a }),
        yield* queue(budget, { priority: "sync", key: a }),
        yield* queue(budget, { priority: "sync", key: b }),
        yield* queue(budget, { priority: "sync", key: b }),
        yield* queue(budget, { priority: "sync" })
      ]
      yield* TestClock.adjust("3 seconds")
      // channel C1 waiting does not hold up C2, nor a call without a channel
      expect(yield* Effect.forEach(calls, Fiber.join)).toEqual([0, 1000, 2000, 0, 1000, 0])
      expect((yield* budget.snapshot()).keys).toBe(2)
    }))

  it.scoped("reconfigure applies new limits; unchanged limits are a no-op", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      yield* budget.reconfigure({ rate_limit: { requests: 1, per_seconds: 1 } })
      expect((yield* budget.snapshot()).available).toBe(0)
      const waiting = yield* queue(budget, { priority: "sync" })
      yield* budget.reconfigure({})
      expect(yield* Fiber.join(waiting)).toBe(0)
      expect((yield* budget.snapshot()).available).toBe(null)
    }))

  it.scoped("a call interrupted once it may start gives its start back", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 1, per_seconds: 1 }
      })
      yield* budget.acquire({ priority: "sync" })
      const waiting = yield* queue(budget, { priority: "sync" })
      // a larger budget lets the waiting call start at once; it is interrupted before it could call
      yield* budget.reconfigure({ rate_limit: { requests: 2, per_seconds: 1 } })
      yield* Fiber.interrupt(waiting)
      const snapshot = yield* budget.snapshot()
      expect(snapshot.available).toBe(1)
      expect(snapshot.daily.used).toBe(1)
      expect(yield* startedAt(budget, { priority: "sync" })).toBe(0)
    }))

  it.scoped("reconfigure keeps the recent starts, and assumes the forgotten ones as late as the old limit let them", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 2, per_seconds: 1 }
      })
      const fiber = yield* Effect.forEach(
        Array.from({ length: 6 }, () => startedAt(budget, { priority: "async" })),
        (call) => call,
        { concurrency: "unbounded" }
      ).pipe(Effect.fork)
      yield* TestClock.adjust("2 seconds")
      expect(yield* Fiber.join(fiber)).toEqual([0, 0, 1000, 1000, 2000, 2000])
      // 4 per 10 s: the starts at 1000 and 2000 are in the window until 11000 (the log held only those at 2000)
      yield* budget.reconfigure({ rate_limit: { requests: 4, per_seconds: 10 } })
      expect((yield* budget.snapshot()).available).toBe(0)
      const next = yield* Effect.either(budget.acquire({ priority: "sync", deadline: 10_999 }))
      expect(Either.isLeft(next) && next.left.retry_after_ms).toBe(9000)
      // back to 2/s: only the last two starts count
      yield* budget.reconfigure({ rate_limit: { requests: 2, per_seconds: 1 } })
      yield* TestClock.adjust(1000)
      expect((yield* budget.snapshot()).available).toBe(2)
    }))

  it.scoped("per-key windows: idle keys whose starts have left the window are dropped beyond maxKeys", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        perKey: { requests: 1, per_seconds: 1 },
        maxKeys: 2
      })
      yield* budget.acquire({ priority: "sync", key: "a" })
      yield* budget.acquire({ priority: "sync", key: "b" })
      yield* TestClock.adjust(500)
      // a and b started in the last second: kept
      yield* budget.acquire({ priority: "sync", key: "c" })
      expect((yield* budget.snapshot()).keys).toBe(3)
      const waiting = yield* queue(budget, { priority: "sync", key: "c" })
      yield* TestClock.adjust(1000)
      // at 1500 a and b are out of their window; c has just started again
      expect(yield* Fiber.join(waiting)).toBe(1500)
      yield* budget.acquire({ priority: "sync", key: "d" })
      expect((yield* budget.snapshot()).keys).toBe(2)
      // a dropped key starts afresh
      expect(yield* startedAt(budget, { priority: "sync", key: "a" })).toBe(1500)
      expect((yield* budget.snapshot()).keys).toBe(3)
    }))

  it.scoped("windowMargin: a start counts against the limit for per_seconds plus the margin", () =>
    Effect.gen(function*() {
      const options = { rate_limit: { requests: 1, per_seconds: 1 }, windowMargin: "100 millis" } as const
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test", ...options })
      yield* budget.acquire({ priority: "sync" })
      const next = yield* queue(budget, { priority: "sync" })
      yield* TestClock.adjust(1099)
      expect(yield* isDone(next)).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(next)).toBe(1100)
    }))

  it.scoped("a provider cannot pause the budget, nor stretch its window, beyond maxPause", () =>
    Effect.gen(function*() {
      const capped = yield* RateBudget.make({ tenant: "acme", provider: "test" })
      yield* capped.observe({ status: 429, headers: { "retry-after": "7200" } })
      // the default: 1 hour
      expect((yield* capped.snapshot()).paused_until).toBe(3_600_000)
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test", maxPause: "10 seconds" })
      yield* budget.observe({ status: 200, headers: { "x-ratelimit-remaining": "5", "x-ratelimit-reset": "600" } })
      expect((yield* budget.snapshot()).provider_window).toEqual({ remaining: 5, reset_at: 10_000 })
    }))

  it.scoped("dailyReserve and defaultPause replace the defaults", () =>
    Effect.gen(function*() {
      const options = { daily_limit: 10, dailyReserve: 0.5, defaultPause: "3 seconds" } as const
      const budget = yield* RateBudget.make({ tenant: "acme", provider: "test", ...options })
      expect((yield* budget.snapshot()).daily).toEqual({ used: 0, limit: 10, reserve: 5 })
      for (let i = 0; i < 5; i++) yield* budget.acquire({ priority: "async" })
      const background = yield* queue(budget, { priority: "async" })
      expect(yield* isDone(background)).toBe(false)
      yield* budget.observe({ status: 429 })
      expect((yield* budget.snapshot()).paused_until).toBe(3000)
    }))

  it.scopedLive("real clock: 5 calls at 2 per 200 ms take about 400 ms", () =>
    Effect.gen(function*() {
      const budget = yield* RateBudget.make({
        tenant: "acme",
        provider: "test",
        rate_limit: { requests: 2, per_seconds: 0.2 }
      })
      const started = Date.now()
      // starts at 0, 0, 200, 200, 400 (a token bucket of 2 at 10/s: 0, 0, 100, 200, 300)
      yield* Effect.forEach(Array.from({ length: 5 }), () => budget.acquire({ priority: "async" }), {
        concurrency: "unbounded"
      })
      const elapsed = Date.now() - started
      expect(elapsed).toBeGreaterThanOrEqual(380)
      expect(elapsed).toBeLessThan(1500)
    }))
})
