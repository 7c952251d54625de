import { describe, expect, it } from "@effect/vitest"
import { retryAfterMs } from "../src/RetryAfter.js"

const now = Date.parse("Thu, 01 Jan 2026 00:00:00 GMT")

describe("retryAfterMs", () => {
  it("reads delay-seconds, whole or fractional", () => {
    expect(retryAfterMs({ "retry-after": "2" }, now)).toBe(2000)
    expect(retryAfterMs({ "retry-after": " 0 " }, now)).toBe(0)
    expect(retryAfterMs({ "retry-after": "1.5" }, now)).toBe(1500)
    expect(retryAfterMs({ "retry-after": "0.1" }, now)).toBe(100)
  })

  it("reads an HTTP date: the time until it, or 0 once it has passed", () => {
    expect(retryAfterMs({ "retry-after": "Thu, 01 Jan 2026 00:00:30 GMT" }, now)).toBe(30_000)
    expect(retryAfterMs({ "retry-after": "Thursday, 01-Jan-26 00:00:05 GMT" }, now)).toBe(5_000)
    expect(retryAfterMs({ "retry-after": "Wed, 31 Dec 2025 23:59:00 GMT" }, now)).toBe(0)
  })

  it("prefers retry-after-ms, falling back to Retry-After when it is not a number", () => {
    expect(retryAfterMs({ "retry-after-ms": "250", "retry-after": "1" }, now)).toBe(250)
    expect(retryAfterMs({ "retry-after-ms": "12.5" }, now)).toBe(12.5)
    expect(retryAfterMs({ "retry-after-ms": "soon", "retry-after": "3" }, now)).toBe(3000)
  })

  it("gives undefined without a header or for one that does not parse", () => {
    expect(retryAfterMs({}, now)).toBeUndefined()
    expect(retryAfterMs({ "retry-after": "" }, now)).toBeUndefined()
    for (const value of ["soon", "-1", "1e3", "1.5.6", "5 seconds", "Fri, 99 Foo 2026"]) {
      expect(retryAfterMs({ "retry-after": value }, now)).toBeUndefined()
    }
    expect(retryAfterMs({ "retry-after-ms": "-5" }, now)).toBeUndefined()
  })
})
