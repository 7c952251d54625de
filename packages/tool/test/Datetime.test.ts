import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { DatetimeParse } from "../src/builtin/Datetime.js"
import { call, decodeFailure, failure } from "./helpers.js"

const reference = "2024-03-05T10:00:00Z" // a Tuesday
const parse = (text: string, extra: Record<string, unknown> = {}) => call(DatetimeParse, { text, reference, ...extra })

describe("datetime.parse", () => {
  it.effect("resolves relative expressions against the reference in the given time zone", () =>
    Effect.gen(function*() {
      expect(yield* parse("tomorrow at 3pm", { timezone: "Europe/Paris" })).toEqual({
        iso: "2024-03-06T14:00:00.000Z",
        date: "2024-03-06",
        time: "15:00:00",
        timezone: "Europe/Paris",
        certain: true,
        matched: "tomorrow at 3pm"
      })
      expect(yield* parse("next Monday 10:00", { timezone: "Europe/Paris" })).toMatchObject({
        iso: "2024-03-11T09:00:00.000Z",
        date: "2024-03-11",
        time: "10:00:00",
        certain: true
      })
      expect(yield* parse("call me in 2 hours")).toMatchObject({
        iso: "2024-03-05T12:00:00.000Z",
        timezone: "UTC",
        certain: true,
        matched: "in 2 hours"
      })
    }))

  it.effect("uses the zone's offset at the target date across a DST change", () =>
    Effect.gen(function*() {
      // Paris moves to summer time on 2024-03-31: 09:00 that day is 07:00Z, not 08:00Z.
      expect(yield* parse("tomorrow at 9am", { reference: "2024-03-30T12:00:00Z", timezone: "Europe/Paris" }))
        .toMatchObject({ iso: "2024-03-31T07:00:00.000Z", date: "2024-03-31", time: "09:00:00" })
      // New York leaves summer time on 2024-11-03.
      expect(yield* parse("Monday 5pm", { reference: "2024-11-01T12:00:00Z", timezone: "America/New_York" }))
        .toMatchObject({ iso: "2024-11-04T22:00:00.000Z", date: "2024-11-04", time: "17:00:00" })
    }))

  it.effect("parses absolute formats", () =>
    Effect.gen(function*() {
      expect(yield* parse("March 5, 2024 3:00 PM")).toMatchObject({
        iso: "2024-03-05T15:00:00.000Z",
        date: "2024-03-05",
        time: "15:00:00",
        certain: true
      })
      expect(yield* parse("5 March 2024 14:30", { timezone: "+02:00" })).toMatchObject({
        iso: "2024-03-05T12:30:00.000Z",
        date: "2024-03-05",
        time: "14:30:00",
        timezone: "+02:00"
      })
      expect(yield* parse("2024-03-05T14:30:00Z")).toMatchObject({ iso: "2024-03-05T14:30:00.000Z", certain: true })
      expect(yield* parse("2024-03-05T14:30:00", { timezone: "Asia/Kolkata" })).toMatchObject({
        iso: "2024-03-05T09:00:00.000Z",
        time: "14:30:00"
      })
    }))

  it.effect("lets an offset written in the text win, reporting date and time in the given zone", () =>
    Effect.gen(function*() {
      expect(yield* parse("Tue, 05 Mar 2024 14:30:00 +0000", { timezone: "Europe/Paris" })).toEqual({
        iso: "2024-03-05T14:30:00.000Z",
        date: "2024-03-05",
        time: "15:30:00",
        timezone: "Europe/Paris",
        certain: true,
        matched: "Tue, 05 Mar 2024 14:30:00 +0000"
      })
      expect(yield* parse("2024-03-05T23:30:00-05:00")).toMatchObject({
        iso: "2024-03-06T04:30:00.000Z",
        date: "2024-03-06",
        time: "04:30:00"
      })
    }))

  it.effect("reports a date without a time as uncertain and without `time`", () =>
    Effect.gen(function*() {
      const bare = yield* parse("2024-03-05")
      expect(bare).toEqual({
        iso: "2024-03-05T12:00:00.000Z",
        date: "2024-03-05",
        timezone: "UTC",
        certain: false,
        matched: "2024-03-05"
      })
      const weekday = yield* parse("see you Friday", { timezone: "Europe/Paris" })
      expect(weekday).toMatchObject({ date: "2024-03-08", certain: false, matched: "Friday" })
      expect(weekday).not.toHaveProperty("time")
      // A time without a day: today is implied.
      expect(yield* parse("at 5pm")).toMatchObject({ date: "2024-03-05", time: "17:00:00", certain: false })
    }))

  it.effect("reads a reference without an offset in the given zone, and defaults the reference to now", () =>
    Effect.gen(function*() {
      expect(yield* parse("in 1 hour", { reference: "2024-03-05T10:00:00", timezone: "Europe/Paris" }))
        .toMatchObject({ iso: "2024-03-05T10:00:00.000Z", time: "11:00:00" })
      const now = Date.now()
      const out = yield* call(DatetimeParse, { text: "in 3 hours" })
      expect(Math.abs(Date.parse(out.iso) - (now + 3 * 3_600_000))).toBeLessThan(60_000)
    }))

  it.effect("fails when the text has no date or time", () =>
    Effect.gen(function*() {
      const error = yield* failure(DatetimeParse, { text: "no idea, some garbage", reference })
      expect(error._tag).toBe("ToolFailed")
      expect(error.message).toBe("could not find a date or time in \"no idea, some garbage\"")
      expect(error).toMatchObject({ tool_id: "datetime.parse", retryable: false })
    }))

  it.effect("rejects an unknown time zone or a malformed reference at decode", () =>
    Effect.gen(function*() {
      const zone = yield* decodeFailure(DatetimeParse, { text: "tomorrow", timezone: "Mars/Olympus" })
      expect(zone._tag).toBe("ToolInputInvalid")
      expect(zone.details?.field).toBe("timezone")
      expect(zone.message).toContain("unknown time zone \"Mars/Olympus\"")

      const offset = yield* decodeFailure(DatetimeParse, { text: "tomorrow", timezone: "+25:00" })
      expect(offset.details?.field).toBe("timezone")

      const ref = yield* decodeFailure(DatetimeParse, { text: "tomorrow", reference: "last week" })
      expect(ref.details?.field).toBe("reference")

      const impossible = yield* decodeFailure(DatetimeParse, { text: "tomorrow", reference: "2024-02-30T10:00:00Z" })
      expect(impossible.details?.field).toBe("reference")
    }))

  it.effect("rejects wrong types, missing and extra fields at decode", () =>
    Effect.gen(function*() {
      const wrongType = yield* decodeFailure(DatetimeParse, { text: 20240305 })
      expect(wrongType._tag).toBe("ToolInputInvalid")
      expect(wrongType.details?.field).toBe("text")

      const empty = yield* decodeFailure(DatetimeParse, { text: "" })
      expect(empty.details?.field).toBe("text")

      const extra = yield* decodeFailure(DatetimeParse, { text: "tomorrow", locale: "fr" })
      expect(extra.details?.field).toBe("locale")
    }))

  it("advertises a JSON Schema", () => {
    expect(DatetimeParse.spec.tool_id).toBe("datetime.parse")
    expect(DatetimeParse.spec.input_schema).toMatchObject({
      type: "object",
      required: ["text"],
      properties: { text: { type: "string" }, reference: { type: "string" }, timezone: { type: "string" } },
      additionalProperties: false
    })
  })
})
