import { describe, expect, it } from "@effect/vitest"
import * as RateSignals from "../src/RateSignals.js"

describe("RateSignals", () => {
  it("reset headers: epoch ms, epoch s, seconds from now, Go durations, HTTP dates", () => {
    const now = 1_700_000_000_000
    expect(RateSignals.parseReset("1700000060000", now)).toBe(1_700_000_060_000)
    expect(RateSignals.parseReset("1700000060", now)).toBe(1_700_000_060_000)
    expect(RateSignals.parseReset("60", now)).toBe(now + 60_000)
    expect(RateSignals.parseReset("6m0s", now)).toBe(now + 360_000)
    expect(RateSignals.parseReset("20ms", now)).toBe(now + 20)
    expect(RateSignals.parseReset("Tue, 14 Nov 2023 22:14:20 GMT", now)).toBe(1_700_000_060_000)
    expect(RateSignals.parseReset("soon", now)).toBe(undefined)
  })

  it("signals: OpenAI's request window, a stale-free 200 says nothing", () => {
    expect(
      RateSignals.readSignals(
        { status: 200, headers: { "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s" } },
        0,
        1000
      )
    ).toEqual({ pauseUntil: 1500, window: undefined, daily: undefined })
    expect(RateSignals.readSignals({ status: 200, headers: { "content-type": "application/json" } }, 0, 1000))
      .toEqual({ pauseUntil: undefined, window: undefined, daily: undefined })
    expect(RateSignals.readSignals({ status: 429, retry_after_ms: 250 }, 0, 1000).pauseUntil).toBe(250)
  })
})
