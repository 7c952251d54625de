import type { TenantId } from "@altan/domain/Ids"
import * as SharedRedis from "@altan/redis/Redis"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import { cacheKey, layerMemory, layerRedis, ToolCache } from "../src/ToolCache.js"

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const a = "tenant-a" as TenantId
const b = "tenant-b" as TenantId

describe("cacheKey", () => {
  it("is the same for the same input in any key order, and differs by tenant, tool and input", () => {
    expect(cacheKey(a, "weather", { city: "Lyon", unit: "c" })).toBe(
      cacheKey(a, "weather", { unit: "c", city: "Lyon" })
    )
    expect(cacheKey(a, "weather", { city: "Lyon" })).not.toBe(cacheKey(b, "weather", { city: "Lyon" }))
    expect(cacheKey(a, "weather", { city: "Lyon" })).not.toBe(cacheKey(a, "forecast", { city: "Lyon" }))
    expect(cacheKey(a, "weather", { city: "Lyon" })).not.toBe(cacheKey(a, "weather", { city: "Paris" }))
  })
})

describe("ToolCache.layerMemory", () => {
  it.live("answers until the TTL passes", () =>
    Effect.gen(function*() {
      const cache = Context.get(yield* Layer.build(layerMemory({ ttl: "50 millis" })), ToolCache)
      yield* cache.set("k", { t: 21 })
      expect(yield* cache.get("k")).toEqual(Option.some({ t: 21 }))
      yield* Effect.sleep("80 millis")
      expect(Option.isNone(yield* cache.get("k"))).toBe(true)
    }).pipe(Effect.scoped))
})

describe("ToolCache.layerRedis", () => {
  it.live("shares entries between runners, expires them, and treats a corrupt entry as a miss", () =>
    Effect.gen(function*() {
      const prefix = `test-${randomBytes(5).toString("hex")}`
      const runner = Layer.build(
        layerRedis({ prefix, ttl: "300 millis" }).pipe(Layer.provide(SharedRedis.layer({ url })))
      )
      const runner1 = Context.get(yield* runner, ToolCache)
      const runner2 = Context.get(yield* runner, ToolCache)
      const key = cacheKey(a, "weather", { city: "Lyon" })
      yield* runner1.set(key, { temperature: 21 })
      expect(yield* runner2.get(key)).toEqual(Option.some({ temperature: 21 }))
      expect(Option.isNone(yield* runner2.get(cacheKey(b, "weather", { city: "Lyon" })))).toBe(true)

      const redis = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(url)),
        (r) => Effect.promise(() => r.quit())
      )
      const ttl = yield* Effect.promise(() => redis.pttl(`${prefix}:cache:${key}`))
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeLessThanOrEqual(300)
      // not JSON: a miss (the tool runs), never a failed call
      yield* Effect.promise(() => redis.set(`${prefix}:cache:${key}`, "{not json", "PX", 10_000))
      expect(Option.isNone(yield* runner1.get(key))).toBe(true)
      yield* Effect.promise(() => redis.del(`${prefix}:cache:${key}`))
    }).pipe(Effect.scoped))
})
