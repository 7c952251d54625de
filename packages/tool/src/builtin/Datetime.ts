import { ToolFailed } from "@altan/domain/ToolWorker"
import * as chrono from "chrono-node"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { excerpt, messageOf } from "./internal.js"

const TOOL_ID = "datetime.parse"

/** A time zone: its offset from UTC (minutes east) at any instant. */
interface Zone {
  readonly offsetAt: (epochMs: number) => number
}

const FIXED_OFFSET = /^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$/i
const formatters = new Map<string, Intl.DateTimeFormat>()

/** "UTC", "Z", "+02:00", "-0530", "UTC+1" or an IANA name such as "Europe/Paris". */
export const zoneOf = (name: string): Zone | undefined => {
  const text = name.trim()
  if (/^(?:Z|UTC|GMT)$/i.test(text)) return { offsetAt: () => 0 }
  const fixed = FIXED_OFFSET.exec(text)
  if (fixed) {
    const minutes = Number(fixed[2]) * 60 + Number(fixed[3] ?? 0)
    if (Number(fixed[3] ?? 0) > 59 || minutes > 14 * 60) return undefined
    const offset = fixed[1] === "-" ? -minutes : minutes
    return { offsetAt: () => offset }
  }
  let format = formatters.get(text)
  if (format === undefined) {
    try {
      format = new Intl.DateTimeFormat("en-US", {
        timeZone: text,
        hourCycle: "h23",
        era: "short",
        year: "numeric",
        month: "numeric",
        day: "numeric",
        hour: "numeric",
        minute: "numeric",
        second: "numeric"
      })
    } catch {
      return undefined
    }
    // Names are user input (any letter case is accepted), so keep the cache bounded.
    if (formatters.size < 1000) formatters.set(text, format)
  }
  const fmt = format
  return {
    offsetAt: (epochMs) => {
      const seconds = Math.floor(epochMs / 1000) * 1000
      const parts = fmt.formatToParts(seconds)
      const part = (type: Intl.DateTimeFormatPartTypes) => Number(parts.find((p) => p.type === type)?.value ?? 0)
      const year = parts.find((p) => p.type === "era")?.value === "BC" ? 1 - part("year") : part("year")
      const wall = utcOf(year, part("month"), part("day"), part("hour"), part("minute"), part("second"), 0)
      return Math.round((wall - seconds) / 60_000)
    }
  }
}

/** Date.UTC without its mapping of years 0-99 onto 1900-1999. */
const utcOf = (year: number, month: number, day: number, hour: number, minute: number, second: number, ms: number) => {
  const date = new Date(Date.UTC(2000, month - 1, day, hour, minute, second, ms))
  date.setUTCFullYear(year)
  return date.getTime()
}

/**
 * The instant at which the zone's clocks show `wallMs` (a wall-clock time encoded as if it were UTC).
 * The offset is looked up at the target, not at the reference, so "tomorrow 9:00" across a DST
 * change still means 9:00 local.
 */
const instantOf = (wallMs: number, zone: Zone): number => {
  const first = wallMs - zone.offsetAt(wallMs) * 60_000
  return wallMs - zone.offsetAt(first) * 60_000
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0")

const REFERENCE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i

/** An ISO-8601 reference as an instant; without an offset it is a wall-clock time in `zone`. */
export const referenceOf = (text: string, zone: Zone): number | undefined => {
  const m = REFERENCE.exec(text.trim())
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((v) => Number(v ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number
  ]
  const ms = m[7] === undefined ? 0 : Math.floor(Number(`0.${m[7]}`) * 1000)
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeap(year) ? 1 : 0)
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) {
    return undefined
  }
  const wall = utcOf(year, month, day, hour, minute, second, ms)
  if (m[8] === undefined) return instantOf(wall, zone)
  const designator = zoneOf(m[8])
  return designator === undefined ? undefined : wall - designator.offsetAt(wall) * 60_000
}

const isLeap = (year: number) => (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0

const Timezone = Schema.String.pipe(
  Schema.filter((s) => zoneOf(s) !== undefined, {
    message: (issue) => `unknown time zone ${JSON.stringify(issue.actual)}: use an IANA name or an offset like +02:00`,
    jsonSchema: {}
  })
)

const Reference = Schema.String.pipe(
  Schema.filter((s) => referenceOf(s, { offsetAt: () => 0 }) !== undefined, {
    message: (issue) => `${JSON.stringify(issue.actual)} is not an ISO-8601 date-time such as 2024-03-05T10:00:00Z`,
    jsonSchema: {}
  })
)

export const DatetimeParseInput = Schema.Struct({
  text: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(10_000)).annotations({
    description: "Text containing a date and/or time, e.g. \"tomorrow at 3pm\", \"next Monday 10:00\", " +
      "\"March 5, 2024 3:00 PM\", \"2024-03-05\", \"Tue, 05 Mar 2024 14:30:00 +0000\". English only."
  }),
  reference: Schema.optionalWith(
    Reference.annotations({
      description: "ISO-8601 instant that relative expressions (\"tomorrow\", \"in 2 hours\") count from; " +
        "default: now. Without an offset it is read in `timezone`."
    }),
    { exact: true }
  ),
  timezone: Schema.optionalWith(
    Timezone.annotations({
      description: "Zone the text is meant in and the output `date`/`time` are given in: an IANA name like " +
        "\"Europe/Paris\" or an offset like \"+02:00\"; default \"UTC\". An offset stated in the text wins."
    }),
    { exact: true }
  )
})
export type DatetimeParseInput = typeof DatetimeParseInput.Type

export const DatetimeParseOutput = Schema.Struct({
  iso: Schema.String.annotations({ description: "The instant, ISO-8601 UTC, e.g. \"2024-03-06T14:00:00.000Z\"." }),
  date: Schema.String.annotations({ description: "Calendar date in `timezone`, YYYY-MM-DD." }),
  time: Schema.optionalWith(
    Schema.String.annotations({
      description: "Time of day in `timezone`, HH:mm:ss; only when the text states a time."
    }),
    { exact: true }
  ),
  timezone: Schema.String.annotations({ description: "The time zone used, as given (default \"UTC\")." }),
  certain: Schema.Boolean.annotations({
    description: "true when the text states both the day and the time; false when either was filled in " +
      "(e.g. \"Friday\" has no time, \"at 5pm\" no day)."
  }),
  matched: Schema.String.annotations({ description: "The part of the text that was read as the date/time." })
})
export type DatetimeParseOutput = typeof DatetimeParseOutput.Type

/** `datetime.parse`: natural-language or formatted dates into an ISO instant and local date/time. */
export const DatetimeParse: Tool.Tool = Tool.make({
  id: TOOL_ID,
  name: "Parse date/time",
  description: "Finds the first date/time in an English text and resolves it to an exact instant. Understands " +
    "relative expressions (\"tomorrow at 3pm\", \"next Monday 10:00\", \"in 2 hours\"), written dates (\"March 5, " +
    "2024 3:00 PM\", \"5 March 2024 14:30\"; slash dates are month-first: 05/03/2024 is May 3), ISO-8601 and " +
    "RFC 2822. Relative expressions count from `reference` (default now) and times without an offset are read " +
    "in `timezone` (default UTC). Returns the instant as ISO-8601 UTC (`iso`), the local `date` and `time` in " +
    "`timezone`, and `certain` saying whether both day and time were stated. When no time is stated the " +
    "instant uses an assumed time of day (noon for a bare date), so rely on `date` then.",
  input: DatetimeParseInput,
  output: DatetimeParseOutput,
  run: (input) =>
    Effect.gen(function*() {
      const fail = (message: string) => new ToolFailed({ tool_id: TOOL_ID, message, retryable: false })
      const timezone = input.timezone ?? "UTC"
      const zone = zoneOf(timezone)
      if (zone === undefined) return yield* Effect.fail(fail(`unknown timezone ${JSON.stringify(timezone)}`))
      const reference = input.reference === undefined ? Date.now() : referenceOf(input.reference, zone)
      if (reference === undefined) {
        return yield* Effect.fail(fail(`reference ${JSON.stringify(input.reference)} is not an ISO-8601 date-time`))
      }
      const results = yield* Effect.try({
        try: () => chrono.parse(input.text, { instant: new Date(reference), timezone: zone.offsetAt(reference) }),
        catch: (error) => fail(`could not parse ${excerpt(input.text)}: ${messageOf(error)}`)
      })
      const result = results[0]
      if (result === undefined) {
        return yield* Effect.fail(fail(`could not find a date or time in ${excerpt(input.text)}`))
      }
      const start = result.start
      const get = (component: chrono.Component) => start.get(component) ?? 0
      const wall = utcOf(
        get("year"),
        get("month"),
        get("day"),
        get("hour"),
        get("minute"),
        get("second"),
        get("millisecond")
      )
      // An offset written in the text ("+0000", "EST") wins; otherwise the wall time is in `timezone`.
      const instant = start.isCertain("timezoneOffset")
        ? wall - get("timezoneOffset") * 60_000
        : instantOf(wall, zone)
      if (!Number.isFinite(instant) || Math.abs(instant) > 8.64e15) {
        return yield* Effect.fail(fail(`${excerpt(result.text)} is out of the representable date range`))
      }
      const local = new Date(instant + zone.offsetAt(instant) * 60_000)
      const year = local.getUTCFullYear()
      const hasTime = start.isCertain("hour")
      return {
        iso: new Date(instant).toISOString(),
        date: `${year < 0 ? "-" : ""}${pad(Math.abs(year), 4)}-${pad(local.getUTCMonth() + 1)}-${
          pad(local.getUTCDate())
        }`,
        ...(hasTime
          ? { time: `${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}` }
          : {}),
        timezone,
        certain: (start.isCertain("day") || start.isCertain("weekday")) && hasTime,
        matched: result.text
      }
    })
})
