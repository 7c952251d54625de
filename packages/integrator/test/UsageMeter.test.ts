import { periodOf } from "@altan/domain/Budget"
import type { TenantId } from "@altan/domain/Ids"
import * as Redis from "@altan/redis/Redis"
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { Redis as IORedis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as UsageMeter from "../src/UsageMeter.js"

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `altan-test-${randomUUID().slice(0, 12)}`

afterAll(async () => {
  const client = new IORedis(url)
  const keys = await client.keys(`${prefix}:*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
})

const dec31 = Date.UTC(2026, 11, 31, 23, 59, 59, 999)
const jan1 = Date.UTC(2027, 0, 1)

/** What every meter must do: count per UTC day and month, start each period afresh, keep tenants apart. */
const contract = Effect.gen(function*() {
  const meter = yield* UsageMeter.UsageMeter
  const tenant = `t${randomUUID().slice(0, 8)}` as TenantId
  const other = `o${randomUUID().slice(0, 8)}` as TenantId
  yield* meter.add(tenant, { tool_calls: 1, llm_tokens: 18, cost_usd: 0.0305 }, dec31 - 1000)
  yield* meter.add(tenant, { tool_calls: 2 }, dec31)
  const before = yield* meter.read(tenant, dec31)
  expect(before.day).toEqual({ tool_calls: 3, llm_tokens: 18, cost_usd: 0.0305 })
  expect(before.month).toEqual(before.day)
  // a new day and a new month: both start from nothing, the old counts are not carried
  const after = yield* meter.read(tenant, jan1)
  expect(after.day).toEqual({ tool_calls: 0, llm_tokens: 0, cost_usd: 0 })
  expect(after.month).toEqual({ tool_calls: 0, llm_tokens: 0, cost_usd: 0 })
  yield* meter.add(tenant, { tool_calls: 1 }, jan1)
  expect((yield* meter.read(tenant, jan1)).day.tool_calls).toBe(1)
  // the next day of the same month: the day is new, the month goes on
  const jan2 = jan1 + 86_400_000
  yield* meter.add(tenant, { tool_calls: 4 }, jan2)
  const second = yield* meter.read(tenant, jan2)
  expect(second.day.tool_calls).toBe(4)
  expect(second.month.tool_calls).toBe(5)
  expect((yield* meter.read(other, jan2)).month.tool_calls).toBe(0)
})

describe("UsageMeter", () => {
  it("periods are UTC days and months, ending at the next one's start", () => {
    expect(periodOf("day", dec31)).toEqual({ key: "2026-12-31", endsAt: jan1 })
    expect(periodOf("month", dec31)).toEqual({ key: "2026-12", endsAt: jan1 })
    expect(periodOf("day", jan1)).toEqual({ key: "2027-01-01", endsAt: jan1 + 86_400_000 })
    expect(periodOf("month", Date.UTC(2028, 1, 29, 12))).toEqual({ key: "2028-02", endsAt: Date.UTC(2028, 2, 1) })
  })

  it.effect("memory: counts per day and month", () => contract.pipe(Effect.provide(UsageMeter.layerMemory)))

  it.effect("redis: counts per day and month, shared by every meter on the same Redis", () =>
    Effect.gen(function*() {
      yield* contract
      // a second meter (another integrator runner) sees what the first counted
      const tenant = `s${randomUUID().slice(0, 8)}` as TenantId
      const first = yield* UsageMeter.UsageMeter
      yield* first.add(tenant, { llm_tokens: 100 }, jan1)
      const seen = yield* Effect.flatMap(UsageMeter.UsageMeter, (second) => second.read(tenant, jan1)).pipe(
        Effect.provide(UsageMeter.layerRedis({ prefix }).pipe(Layer.provide(Redis.layer({ url }))))
      )
      expect(seen.day.llm_tokens).toBe(100)
    }).pipe(Effect.provide(UsageMeter.layerRedis({ prefix }).pipe(Layer.provide(Redis.layer({ url }))))))

  it.effect("admit: a spent budget refuses, with when it resets; no budget reads nothing", () =>
    Effect.gen(function*() {
      const meter = yield* UsageMeter.UsageMeter
      const tenant = "admit" as TenantId
      yield* TestClock.setTime(dec31)
      const budgets = { tool_calls: { limit: 2, period: "month" as const } }
      yield* UsageMeter.admit(meter, tenant, budgets, ["tool_calls"])
      yield* meter.add(tenant, { tool_calls: 2 }, dec31)
      const refused = yield* Effect.flip(UsageMeter.admit(meter, tenant, budgets, ["tool_calls"]))
      expect(refused).toMatchObject({
        _tag: "BudgetExhausted",
        budget: "tool_calls",
        period: "month",
        limit: 2,
        used: 2,
        resets_at: new Date(jan1).toISOString()
      })
      expect(refused.message).toContain("PUT /v1/settings")
      // other budgets, or none at all, let it through
      yield* UsageMeter.admit(meter, tenant, budgets, ["llm_tokens"])
      yield* UsageMeter.admit(meter, tenant, undefined, ["tool_calls"])
      // the month is over: allowed again
      yield* TestClock.setTime(jan1)
      yield* UsageMeter.admit(meter, tenant, budgets, ["tool_calls"])
      // the usage report: the limit where one is set, each period's reset
      const report = yield* UsageMeter.report(meter, tenant, budgets)
      expect(report).toHaveLength(6)
      expect(report.find((u) => u.budget === "tool_calls" && u.period === "month")).toEqual({
        budget: "tool_calls",
        period: "month",
        used: 0,
        limit: 2,
        resets_at: new Date(Date.UTC(2027, 1, 1)).toISOString()
      })
    }).pipe(Effect.provide(UsageMeter.layerMemory)))
})
