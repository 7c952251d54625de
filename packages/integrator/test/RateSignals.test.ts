import { describe, expect, it } from "@effect/vitest"
import * as RateSignals from "../src/RateSignals.js"

const now = 1_700_000_000_000

/** What a response with these headers says, 1 s being the default pause. */
const read = (status: number, headers: Record<string, string>) =>
  RateSignals.readSignals({ status, headers }, now, 1000)

const nothing = { pauseUntil: undefined, window: undefined, daily: undefined }

describe("RateSignals", () => {
  it("Retry-After pauses a 429, a 503 and a 403 (GitHub's secondary limit), not a success", () => {
    expect(read(429, { "Retry-After": "2" })).toEqual({ ...nothing, pauseUntil: now + 2000 })
    expect(read(503, { "retry-after": "Tue, 14 Nov 2023 22:14:20 GMT" })).toEqual({
      ...nothing,
      pauseUntil: now + 60_000
    })
    expect(read(403, { "retry-after": "60" })).toEqual({ ...nothing, pauseUntil: now + 60_000 })
    expect(read(200, { "retry-after": "60" })).toEqual(nothing)
    // OpenAI and Azure in milliseconds
    expect(read(429, { "retry-after-ms": "1500", "retry-after": "9" })).toEqual({ ...nothing, pauseUntil: now + 1500 })
    // parsed by the caller (a tool's ToolFailed.retry_after_ms): wins over the headers
    expect(RateSignals.readSignals({ status: 429, headers: { "retry-after": "9" }, retry_after_ms: 250 }, now, 1000))
      .toEqual({ ...nothing, pauseUntil: now + 250 })
  })

  it("a 429 without any hint pauses the default; other statuses without one say nothing", () => {
    expect(RateSignals.readSignals({ status: 429 }, now, 1234)).toEqual({ ...nothing, pauseUntil: now + 1234 })
    expect(read(503, {})).toEqual(nothing)
    expect(read(403, {})).toEqual(nothing)
  })

  it("GitHub: X-RateLimit-Remaining with a reset in epoch seconds", () => {
    expect(read(403, { "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000030" }))
      .toEqual({ ...nothing, pauseUntil: now + 30_000 })
    expect(read(200, { "x-ratelimit-remaining": "4999", "x-ratelimit-reset": "1700003600" }))
      .toEqual({ ...nothing, window: { remaining: 4999, resetAt: now + 3_600_000 } })
    // spent without a reset: the default pause; calls left without one (or with a reset past): no window
    expect(read(200, { "x-ratelimit-remaining": "0" })).toEqual({ ...nothing, pauseUntil: now + 1000 })
    expect(read(200, { "x-ratelimit-remaining": "10" })).toEqual(nothing)
    expect(read(200, { "x-ratelimit-remaining": "10", "x-ratelimit-reset": "1699999999" })).toEqual(nothing)
    expect(read(200, { "x-ratelimit-remaining": "many", "x-ratelimit-reset": "60" })).toEqual(nothing)
  })

  it("the IETF draft's RateLimit-Remaining/-Reset (seconds from now) and Twitter's X-Rate-Limit-*", () => {
    expect(read(200, { "RateLimit-Remaining": "7", "RateLimit-Reset": "30" }))
      .toEqual({ ...nothing, window: { remaining: 7, resetAt: now + 30_000 } })
    expect(read(200, { "ratelimit-remaining": "0", "ratelimit-reset": "30" }))
      .toEqual({ ...nothing, pauseUntil: now + 30_000 })
    expect(read(200, { "x-rate-limit-remaining": "3", "x-rate-limit-reset": "1700000900" }))
      .toEqual({ ...nothing, window: { remaining: 3, resetAt: now + 900_000 } })
  })

  it("OpenAI: the request window with a Go duration reset", () => {
    expect(read(200, { "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "6m0s" }))
      .toEqual({ ...nothing, window: { remaining: 59, resetAt: now + 360_000 } })
  })

  it("several windows: the one with the fewest calls left; several pauses: the longest", () => {
    expect(read(200, {
      "x-ratelimit-remaining": "50",
      "x-ratelimit-reset": "60",
      "ratelimit-remaining": "5",
      "ratelimit-reset": "10"
    })).toEqual({ ...nothing, window: { remaining: 5, resetAt: now + 10_000 } })
    expect(read(200, {
      "x-ratelimit-remaining": "5",
      "x-ratelimit-reset": "10",
      "ratelimit-remaining": "50",
      "ratelimit-reset": "60"
    })).toEqual({ ...nothing, window: { remaining: 5, resetAt: now + 10_000 } })
    expect(read(429, { "retry-after": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "5" }))
      .toEqual({ ...nothing, pauseUntil: now + 5000 })
    expect(read(429, { "retry-after": "8", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "5" }))
      .toEqual({ ...nothing, pauseUntil: now + 8000 })
  })

  it("HubSpot: the interval window, the secondly limit and the daily allowance", () => {
    expect(read(200, {
      "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
      "X-HubSpot-RateLimit-Max": "100",
      "X-HubSpot-RateLimit-Remaining": "40"
    })).toEqual({ ...nothing, window: { remaining: 40, resetAt: now + 10_000 } })
    expect(read(200, { "x-hubspot-ratelimit-remaining": "0", "x-hubspot-ratelimit-interval-milliseconds": "10000" }))
      .toEqual({ ...nothing, pauseUntil: now + 10_000 })
    expect(read(200, { "x-hubspot-ratelimit-secondly": "10", "x-hubspot-ratelimit-secondly-remaining": "0" }))
      .toEqual({ ...nothing, pauseUntil: now + 1000 })
    expect(read(200, { "x-hubspot-ratelimit-secondly-remaining": "3" })).toEqual(nothing)
    expect(read(200, { "X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "249000" }))
      .toEqual({ ...nothing, daily: { used: 1000, limit: 250_000 } })
    // half a pair is not an allowance
    expect(read(200, { "x-hubspot-ratelimit-daily": "250000" })).toEqual(nothing)
  })

  it("Salesforce: api-usage in Sforce-Limit-Info, among its other entries", () => {
    expect(read(200, { "Sforce-Limit-Info": "api-usage=18/15000" }))
      .toEqual({ ...nothing, daily: { used: 18, limit: 15_000 } })
    expect(read(200, { "sforce-limit-info": "api-usage=25/5000; per-app-api-usage=17/250(appName=sample)" }))
      .toEqual({ ...nothing, daily: { used: 25, limit: 5000 } })
    // an app's own share is not the org's allowance
    expect(read(200, { "sforce-limit-info": "per-app-api-usage=17/250(appName=sample)" })).toEqual(nothing)
    expect(read(200, { "sforce-limit-info": "api-usage=0/0" })).toEqual(nothing)
  })

  it("header names in any case, values trimmed", () => {
    expect(read(200, { "X-RATELIMIT-REMAINING": " 0 ", "x-RateLimit-Reset": " 1700000030 " }))
      .toEqual({ ...nothing, pauseUntil: now + 30_000 })
  })

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
