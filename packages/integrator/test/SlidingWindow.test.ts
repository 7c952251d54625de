import { describe, expect, it } from "@effect/vitest"
import * as SlidingWindow from "../src/SlidingWindow.js"

/** A log of `requests` per `per_seconds` holding `starts`, recorded in that order. */
const windowOf = (requests: number, per_seconds: number, starts: ReadonlyArray<number>, margin = 0) => {
  const w = SlidingWindow.make({ requests, per_seconds }, margin)
  for (const at of starts) SlidingWindow.record(w, at)
  return w
}

/** When each of the next `n` calls may start, from `from`. */
const nextStarts = (w: SlidingWindow.SlidingWindow, from: number, n: number) =>
  Array.from({ length: n }, (_, i) => SlidingWindow.timeFor(w, from, i + 1))

describe("SlidingWindow", () => {
  it("admits a call once the oldest start is a whole span old, not a millisecond before", () => {
    const w = windowOf(2, 1, [0, 0])
    expect(SlidingWindow.hasRoom(w, 999)).toBe(false)
    expect(SlidingWindow.startsIn(w, 999)).toBe(2)
    expect(SlidingWindow.hasRoom(w, 1000)).toBe(true)
    expect(SlidingWindow.startsIn(w, 1000)).toBe(0)
    expect(nextStarts(w, 0, 3)).toEqual([1000, 1000, 2000])
  })

  it("an empty or part-filled log has room at once", () => {
    const w = windowOf(3, 1, [])
    expect(SlidingWindow.hasRoom(w, 0)).toBe(true)
    expect(nextStarts(w, 5, 4)).toEqual([5, 5, 5, 1005])
    SlidingWindow.record(w, 5)
    SlidingWindow.record(w, 5)
    expect(SlidingWindow.hasRoom(w, 5)).toBe(true)
    expect(nextStarts(w, 5, 2)).toEqual([5, 1005])
  })

  it("the margin lengthens the span", () => {
    const w = windowOf(1, 1, [0], 100)
    expect(SlidingWindow.hasRoom(w, 1099)).toBe(false)
    expect(SlidingWindow.hasRoom(w, 1100)).toBe(true)
  })

  it("a span not exact in floating point (2.007 s) still admits at the whole millisecond", () => {
    const w = windowOf(1, 2.007, [0])
    expect(w.span).toBeGreaterThan(2007)
    expect(SlidingWindow.hasRoom(w, 2006)).toBe(false)
    expect(SlidingWindow.hasRoom(w, 2007)).toBe(true)
  })

  it("holds only the last `requests` starts, across the ring's growth and wrap-around", () => {
    const w = windowOf(10, 1, Array.from({ length: 10 }, (_, i) => i * 10))
    expect(SlidingWindow.startsIn(w, 90)).toBe(10)
    expect(nextStarts(w, 90, 2)).toEqual([1000, 1010])
    // each new start pushes the oldest out
    SlidingWindow.record(w, 1000)
    SlidingWindow.record(w, 1010)
    expect(SlidingWindow.startsIn(w, 1010)).toBe(10)
    expect(nextStarts(w, 1010, 3)).toEqual([1020, 1030, 1040])
    expect(SlidingWindow.startsIn(w, 1085)).toBe(3)
  })

  it("the n-th next call: one span after the start it replaces, whole spans later once the log is used up", () => {
    const w = windowOf(2, 1, [0, 500])
    expect(nextStarts(w, 600, 5)).toEqual([1000, 1500, 2000, 2500, 3000])
    // not before `from`, even when the log would allow it
    expect(nextStarts(w, 1200, 3)).toEqual([1200, 1500, 2200])
  })

  it("a start recorded late (the clock stepped back) is kept in order", () => {
    const w = windowOf(2, 1, [500, 400])
    expect(nextStarts(w, 500, 2)).toEqual([1400, 1500])
    SlidingWindow.record(w, 450)
    // 400 is pushed out, not the newest
    expect(nextStarts(w, 500, 2)).toEqual([1450, 1500])
  })

  it("forget takes a start back out; a start it does not hold is a no-op", () => {
    const w = windowOf(2, 1, [0, 100])
    SlidingWindow.forget(w, 300)
    expect(SlidingWindow.hasRoom(w, 100)).toBe(false)
    SlidingWindow.forget(w, 0)
    expect(SlidingWindow.hasRoom(w, 100)).toBe(true)
    expect(SlidingWindow.startsIn(w, 100)).toBe(1)
    expect(nextStarts(w, 100, 2)).toEqual([100, 1100])
  })

  it("pace: after a pause one call at its end, then one per span / requests", () => {
    const w = windowOf(4, 1, [])
    SlidingWindow.pace(w, 2000)
    // the made-up starts at 1250, 1500, 1750 fill all but one place of the window ending at 2000
    expect(SlidingWindow.startsIn(w, 2000)).toBe(3)
    expect(nextStarts(w, 2000, 4)).toEqual([2000, 2250, 2500, 2750])
  })

  it("pace keeps real starts that are stricter than the made-up ones", () => {
    const w = windowOf(2, 1, [1900, 1950])
    SlidingWindow.pace(w, 2000)
    // made up: 1500; the newest two of 1500, 1900, 1950 are the real ones
    expect(nextStarts(w, 2000, 2)).toEqual([2900, 2950])
    // a real start older than the made-up ones goes first: 1200, 1250, 1500, 1750
    const older = windowOf(4, 1, [1200])
    SlidingWindow.pace(older, 2000)
    expect(nextStarts(older, 2000, 4)).toEqual([2200, 2250, 2500, 2750])
  })

  it("reshape to fewer requests keeps the newest starts", () => {
    const w = windowOf(3, 1, [0, 500, 900])
    SlidingWindow.reshape(w, { requests: 1, per_seconds: 1 }, 900, 0)
    expect(SlidingWindow.startsIn(w, 900)).toBe(1)
    expect(nextStarts(w, 900, 1)).toEqual([1900])
  })

  it("reshape to more requests in a longer span assumes the forgotten starts as late as the old limit allowed", () => {
    // 2/s with starts at 0, 0, 1000, 1000, 2000, 2000: the log holds only the two at 2000
    const w = windowOf(2, 1, [0, 0, 1000, 1000, 2000, 2000])
    SlidingWindow.reshape(w, { requests: 4, per_seconds: 10 }, 2000, 0)
    expect(SlidingWindow.startsIn(w, 2000)).toBe(4)
    expect(nextStarts(w, 2000, 3)).toEqual([11_000, 11_000, 12_000])
  })

  it("reshape assumes no start the new span does not reach", () => {
    const w = windowOf(2, 1, [0, 0, 1000, 1000, 2000, 2000])
    // 6 per 1.5 s at 2000: the starts at 1000 are in that window, those at 0 are not
    SlidingWindow.reshape(w, { requests: 6, per_seconds: 1.5 }, 2000, 0)
    expect(SlidingWindow.startsIn(w, 2000)).toBe(4)
    expect(w.size).toBe(4)
    expect(nextStarts(w, 2000, 3)).toEqual([2000, 2000, 2500])
  })
})
