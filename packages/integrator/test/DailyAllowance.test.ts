import { describe, expect, it } from "@effect/vitest"
import * as DailyAllowance from "../src/DailyAllowance.js"

const { DAY, SLOT } = DailyAllowance

/** An allowance of `limit` a day (10% reserved) with `n` calls spent at `at`. */
const spent = (limit: number, n: number, at: number) => {
  const daily = DailyAllowance.make(0.1)
  daily.configured = limit
  for (let i = 0; i < n; i++) daily.spend(at)
  return daily
}

describe("DailyAllowance", () => {
  it("calls are forgotten when their 5-minute slot is 24 hours old, not before", () => {
    const daily = spent(3, 3, 60_000)
    expect(daily.canSpend("sync")).toBe(false)
    // made in the slot starting at 0: back at 24 h 5 min
    expect(daily.readyAt("sync", 120_000)).toBe(DAY + SLOT)
    daily.expire(DAY + SLOT - 1)
    expect(daily.used).toBe(3)
    expect(daily.canSpend("sync")).toBe(false)
    daily.expire(DAY + SLOT)
    expect(daily.used).toBe(0)
    expect(daily.canSpend("sync")).toBe(true)
    expect(daily.readyAt("sync", DAY + SLOT)).toBe(DAY + SLOT)
  })

  it("each slot is forgotten on its own, oldest first", () => {
    const daily = spent(10, 0, 0)
    daily.spend(SLOT - 1)
    daily.spend(SLOT)
    daily.spend(SLOT + 1)
    expect(daily.slots.map((s) => [s.start, s.count])).toEqual([[0, 1], [SLOT, 2]])
    daily.expire(DAY + SLOT)
    expect(daily.used).toBe(2)
    daily.expire(DAY + 2 * SLOT)
    expect(daily.used).toBe(0)
    expect(daily.slots).toEqual([])
  })

  it("the reserve is for sync calls: async calls wait for the slot that frees enough", () => {
    const daily = spent(20, 10, 0)
    for (let i = 0; i < 8; i++) daily.spend(SLOT)
    expect(daily.reserve()).toBe(2)
    expect(daily.canSpend("async")).toBe(false)
    expect(daily.canSpend("sync")).toBe(true)
    expect(daily.readyAt("sync", SLOT)).toBe(SLOT)
    // 18 used, async needs 3 left: the 10 of the first slot must go
    expect(daily.readyAt("async", SLOT)).toBe(SLOT + DAY)
    daily.spend(SLOT)
    daily.spend(SLOT)
    expect(daily.canSpend("sync")).toBe(false)
    expect(daily.readyAt("sync", SLOT)).toBe(SLOT + DAY)
  })

  it("without a limit everything may go at once", () => {
    const daily = DailyAllowance.make(0.1)
    daily.spend(0, 1_000_000)
    expect(daily.limit()).toBe(undefined)
    expect(daily.reserve()).toBe(0)
    expect(daily.canSpend("async")).toBe(true)
    expect(daily.readyAt("async", 7)).toBe(7)
  })

  it("the stricter of the configured and the reported limit applies", () => {
    const daily = DailyAllowance.make(0.1)
    daily.report(0, 500, 0)
    expect(daily.limit()).toBe(500)
    daily.configured = 100
    expect(daily.limit()).toBe(100)
    daily.configured = 1000
    expect(daily.limit()).toBe(500)
    expect(daily.reserve()).toBe(50)
  })

  it("report: a higher count is added now, a lower one taken from the oldest slots", () => {
    const daily = spent(100, 2, 0)
    daily.spend(SLOT)
    daily.spend(SLOT)
    daily.report(10, 100, 2 * SLOT)
    expect(daily.used).toBe(10)
    expect(daily.slots.map((s) => [s.start, s.count])).toEqual([[0, 2], [SLOT, 2], [2 * SLOT, 6]])
    daily.report(5, 100, 2 * SLOT)
    expect(daily.used).toBe(5)
    // the slots it empties are dropped
    expect(daily.slots.map((s) => [s.start, s.count])).toEqual([[2 * SLOT, 5]])
  })

  it("refund gives back one call of its slot, unless the slot is forgotten", () => {
    const daily = spent(3, 0, 0)
    const slot = daily.spend(0)
    daily.spend(0)
    daily.refund(slot)
    expect(daily.used).toBe(1)
    daily.expire(DAY + SLOT)
    expect(daily.used).toBe(0)
    daily.refund(slot)
    expect(daily.used).toBe(0)
  })
})
