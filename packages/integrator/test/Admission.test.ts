import type { TenantId } from "@altan/domain/Ids"
import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import * as Admission from "../src/Admission.js"

const acme = "acme" as TenantId
const globex = "globex" as TenantId

const admitted = (admission: Admission.Admission["Type"], tenantId: TenantId, times: number, settings?: {
  readonly requests_per_second?: number
  readonly max_concurrent_tasks?: number
}) =>
  Effect.forEach(Array.from({ length: times }), () => Effect.either(admission.admit(tenantId, settings))).pipe(
    Effect.map((results) => results.filter(Either.isRight).length)
  )

describe("Admission", () => {
  it.effect("over the request rate: TooManyRequests with the time until a request is free", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make()
      // defaults: 50 requests per second, bursts of 100
      expect(yield* admitted(admission, acme, 100)).toBe(100)
      const refused = yield* Effect.flip(admission.admit(acme))
      expect(refused._tag).toBe("TooManyRequests")
      expect(refused.code).toBe("rate_limited")
      expect(refused.details).toEqual({ retry_after_ms: 20, limit: "requests_per_second" })
      expect(Admission.retryAfterSeconds(refused)).toBe(1)
      yield* TestClock.adjust(20)
      yield* admission.admit(acme)
      yield* TestClock.adjust("1 second")
      expect(yield* admitted(admission, acme, 60)).toBe(50)
    }))

  it.effect("tenant settings override the rate, the burst follows it", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make()
      const settings = { requests_per_second: 2 }
      expect(yield* admitted(admission, acme, 10, settings)).toBe(4)
      const refused = yield* Effect.flip(admission.admit(acme, settings))
      expect(refused.details?.["retry_after_ms"]).toBe(500)
      expect(yield* admission.snapshot(acme, settings)).toMatchObject({ burst: 4, requests_per_second: 2 })
      // raised: the new rate applies to the tokens left
      yield* TestClock.adjust(500)
      expect(yield* admitted(admission, acme, 10, { requests_per_second: 100 })).toBe(1)
    }))

  it.effect("a tenant's settings can lower the operator's limits, never raise them", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make({ requestsPerSecond: 5, burstSeconds: 1, maxConcurrentTasks: 2 })
      const greedy = { requests_per_second: 100_000, max_concurrent_tasks: 100_000 }
      expect(yield* admission.snapshot(acme, greedy)).toMatchObject({
        requests_per_second: 5,
        burst: 5,
        max_concurrent_tasks: 2
      })
      expect(yield* admitted(admission, acme, 20, greedy)).toBe(5)
    }))

  it.effect("one tenant's flood leaves another tenant alone", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make({ requestsPerSecond: 1, burstSeconds: 5, maxConcurrentTasks: 1 })
      expect(yield* admitted(admission, acme, 50)).toBe(5)
      expect(yield* admitted(admission, globex, 50)).toBe(5)
      const latch = yield* Deferred.make<void>()
      const running = yield* admission.task(acme, undefined, Deferred.await(latch)).pipe(Effect.fork)
      yield* Effect.yieldNow()
      expect((yield* Effect.flip(admission.task(acme, undefined, Effect.void))).details?.["limit"]).toBe(
        "max_concurrent_tasks"
      )
      yield* admission.task(globex, undefined, Effect.void)
      yield* Deferred.succeed(latch, undefined)
      yield* Fiber.join(running)
    }))

  it.effect("a task slot is released on success, on failure and on interruption", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make()
      const settings = { max_concurrent_tasks: 2 }
      const tasks = () => Effect.map(admission.snapshot(acme, settings), (s) => s.tasks)

      const latch = yield* Deferred.make<void>()
      const first = yield* admission.task(acme, settings, Deferred.await(latch)).pipe(Effect.fork)
      const second = yield* admission.task(acme, settings, Effect.never).pipe(Effect.fork)
      yield* Effect.yieldNow()
      expect(yield* tasks()).toBe(2)
      const busy = yield* Effect.flip(admission.task(acme, settings, Effect.succeed("never runs")))
      expect(busy._tag).toBe("TooManyRequests")
      expect(busy.details).toEqual({ retry_after_ms: 1000, limit: "max_concurrent_tasks" })

      yield* Deferred.succeed(latch, undefined)
      yield* Fiber.join(first)
      expect(yield* tasks()).toBe(1)

      yield* Fiber.interrupt(second)
      expect(yield* tasks()).toBe(0)

      const failed = yield* Effect.flip(admission.task(acme, settings, Effect.fail("boom" as const)))
      expect(failed).toBe("boom")
      expect(yield* tasks()).toBe(0)
      expect(yield* admission.task(acme, settings, Effect.succeed(42))).toBe(42)
      expect(yield* tasks()).toBe(0)
    }))

  it.effect("bounded memory: past maxTenants the least recently seen idle tenant is forgotten", () =>
    Effect.gen(function*() {
      const admission = yield* Admission.make({ maxTenants: 2, requestsPerSecond: 1, burstSeconds: 10 })
      yield* admission.admit(acme)
      const latch = yield* Deferred.make<void>()
      const running = yield* admission.task(globex, undefined, Deferred.await(latch)).pipe(Effect.fork)
      yield* Effect.yieldNow()
      for (const other of ["t1", "t2", "t3"]) yield* admission.admit(other as TenantId)
      // acme was forgotten (a fresh bucket); globex runs a task and is kept
      expect((yield* admission.snapshot(acme)).tokens).toBe(10)
      expect((yield* admission.snapshot(globex)).tasks).toBe(1)
      yield* Deferred.succeed(latch, undefined)
      yield* Fiber.join(running)
      expect((yield* admission.snapshot(globex)).tasks).toBe(0)
    }))

  it.effect("defaults come from ADMISSION_* environment variables", () =>
    Effect.gen(function*() {
      const options = yield* Admission.config.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([["ADMISSION_REQUESTS_PER_SECOND", "5"], ["ADMISSION_MAX_CONCURRENT_TASKS", "3"]])
          )
        )
      )
      expect(options.requestsPerSecond).toBe(5)
      expect(options.maxConcurrentTasks).toBe(3)
      expect(options.burstSeconds).toBe(2)
      expect(Duration.toMillis(options.busyRetryAfter)).toBe(1000)
    }))
})
