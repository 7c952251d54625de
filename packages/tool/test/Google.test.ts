import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import {
  buildMessage,
  CalendarCreateEvent,
  CalendarListEvents,
  encodeHeaderWords,
  GmailListMessages,
  GmailSend,
  tools
} from "../src/builtin/Google.js"
import type { Fake, Received } from "./vendorFake.js"
import { jsonError, runTool, startFake, TOKEN } from "./vendorFake.js"

let fake: Fake
const setup = () => ({ baseUrl: fake.url })

beforeAll(async () => {
  fake = await startFake()
})
afterAll(() => fake.close())
beforeEach(() => {
  fake.received.length = 0
})

const event = {
  kind: "calendar#event",
  etag: "\"3181161784712000\"",
  id: "evt123",
  status: "confirmed",
  htmlLink: "https://www.google.com/calendar/event?eid=ZXZ0MTIz",
  created: "2025-03-01T08:00:00.000Z",
  summary: "Planning",
  start: { dateTime: "2025-03-03T09:00:00+01:00", timeZone: "Europe/Paris" },
  end: { dateTime: "2025-03-03T10:00:00+01:00", timeZone: "Europe/Paris" },
  organizer: { email: "me@example.com", self: true }
}

const expectAuth = (req: Received) => expect(req.headers.authorization).toBe(TOKEN)

const decodeRaw = (raw: string) => Buffer.from(raw, "base64url").toString("utf8")

describe("google tools", () => {
  it("advertises provider, hosts and side effects", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual([
      "google_calendar.create_event",
      "google_calendar.list_events",
      "gmail.send",
      "gmail.list_messages"
    ])
    expect(tools.every((t) => t.spec.provider === "google")).toBe(true)
    expect(CalendarCreateEvent.hosts).toEqual(["www.googleapis.com"])
    expect(GmailSend.hosts).toEqual(["gmail.googleapis.com"])
    expect(CalendarCreateEvent.spec.side_effect).toBe(true)
    expect(CalendarListEvents.spec).toMatchObject({ side_effect: false, cacheable: true })
  })
})

describe("google_calendar.create_event", () => {
  it.effect("POSTs the documented event body to the primary calendar and returns the typed event", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("POST")
        expect(req.rawPath).toBe("/calendar/v3/calendars/primary/events")
        expectAuth(req)
        expect(req.headers["content-type"]).toContain("application/json")
        return { json: event }
      }
      const out = yield* runTool(CalendarCreateEvent, {
        summary: "Planning",
        description: "Q2",
        start: { dateTime: "2025-03-03T09:00:00", timeZone: "Europe/Paris" },
        end: "2025-03-03T10:00:00+01:00",
        attendees: [{ email: "bob@example.com" }]
      }, setup())
      expect(out).toEqual({
        id: "evt123",
        htmlLink: event.htmlLink,
        status: "confirmed",
        start: event.start,
        end: event.end,
        summary: "Planning"
      })
      expect(fake.received).toHaveLength(1)
      expect(fake.received[0]!.json).toEqual({
        summary: "Planning",
        description: "Q2",
        start: { dateTime: "2025-03-03T09:00:00", timeZone: "Europe/Paris" },
        end: { dateTime: "2025-03-03T10:00:00+01:00" },
        attendees: [{ email: "bob@example.com" }]
      })
    }))

  it.effect("maps a plain date to an all-day {date} and encodes the calendar id as one segment", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ json: { id: "e2", status: "confirmed", start: { date: "2025-03-03" } } })
      yield* runTool(CalendarCreateEvent, {
        calendarId: "../../gmail/v1/users/me/messages/send",
        summary: "Off",
        start: "2025-03-03",
        end: { date: "2025-03-04" },
        sendUpdates: "all"
      }, setup())
      expect(fake.received[0]!.rawPath).toBe(
        "/calendar/v3/calendars/..%2F..%2Fgmail%2Fv1%2Fusers%2Fme%2Fmessages%2Fsend/events"
      )
      expect(fake.received[0]!.query.get("sendUpdates")).toBe("all")
      expect(fake.received[0]!.json).toMatchObject({ start: { date: "2025-03-03" }, end: { date: "2025-03-04" } })
      // URL parsers resolve ".." even percent-encoded, so it is refused outright.
      const dots = yield* Effect.flip(
        runTool(CalendarCreateEvent, {
          calendarId: "..",
          summary: "x",
          start: "2025-03-03",
          end: "2025-03-04"
        }, setup())
      )
      expect(dots.message).toContain("calendarId")
      expect(fake.received).toHaveLength(1)
    }))

  it.effect("fails with Google's error message, not retryable, for a documented 404", () =>
    Effect.gen(function*() {
      fake.handle = () =>
        jsonError(404, {
          code: 404,
          message: "Not Found",
          status: "NOT_FOUND",
          errors: [{ domain: "global", reason: "notFound", message: "Not Found" }]
        })
      const error = yield* Effect.flip(
        runTool(CalendarCreateEvent, {
          calendarId: "nope",
          summary: "x",
          start: "2025-03-03",
          end: "2025-03-04"
        }, setup())
      )
      expect(error._tag).toBe("ToolFailed")
      expect(error).toMatchObject({ retryable: false, status: 404 })
      expect(error.message).toContain("NOT_FOUND: Not Found")
    }))

  it.effect("fails without a request when the tenant has no google connection", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        runTool(CalendarCreateEvent, { summary: "x", start: "2025-03-03", end: "2025-03-04" }, {
          ...setup(),
          credential: undefined
        })
      )
      expect(error).toMatchObject({
        _tag: "ToolFailed",
        retryable: false,
        message: "no google connection for this tenant: connect it with PUT /v1/connections/google"
      })
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("rejects invalid input naming the field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        CalendarCreateEvent.decode({ summary: "x", start: "tomorrow", end: "2025-03-04" })
      )
      expect(error._tag).toBe("ToolInputInvalid")
      expect(error.message).toContain("start")
      const attendee = yield* Effect.flip(
        CalendarCreateEvent.decode({
          summary: "x",
          start: "2025-03-03",
          end: "2025-03-04",
          attendees: [{ email: "x" }]
        })
      )
      expect(attendee.message).toContain("attendees.0.email")
    }))
})

describe("google_calendar.list_events", () => {
  it.effect("GETs with the documented query and returns items and nextPageToken", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("GET")
        expect(req.rawPath).toBe("/calendar/v3/calendars/team%40example.com/events")
        expectAuth(req)
        return { json: { kind: "calendar#events", summary: "team", items: [event], nextPageToken: "p2" } }
      }
      const out = yield* runTool(CalendarListEvents, {
        calendarId: "team@example.com",
        timeMin: "2025-03-01T00:00:00Z",
        timeMax: "2025-03-31T00:00:00Z",
        maxResults: 10,
        pageToken: "p1"
      }, setup())
      expect(out).toEqual({
        items: [{
          id: "evt123",
          htmlLink: event.htmlLink,
          status: "confirmed",
          start: event.start,
          end: event.end,
          summary: "Planning"
        }],
        nextPageToken: "p2"
      })
      expect(Object.fromEntries(fake.received[0]!.query)).toEqual({
        timeMin: "2025-03-01T00:00:00Z",
        timeMax: "2025-03-31T00:00:00Z",
        maxResults: "10",
        singleEvents: "true",
        orderBy: "startTime",
        pageToken: "p1"
      })
    }))

  it.effect("marks 429 and 503 retryable", () =>
    Effect.gen(function*() {
      fake.handle = () => jsonError(429, { code: 429, message: "Rate Limit Exceeded", status: "RESOURCE_EXHAUSTED" })
      const limited = yield* Effect.flip(runTool(CalendarListEvents, {}, setup()))
      expect(limited).toMatchObject({ retryable: true, status: 429 })
      expect(limited.message).toContain("Rate Limit Exceeded")
      fake.handle = () => ({ status: 503, text: "Service Unavailable" })
      const down = yield* Effect.flip(runTool(CalendarListEvents, {}, setup()))
      expect(down).toMatchObject({ retryable: true, status: 503 })
    }))

  it.effect("rejects maxResults out of range", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(CalendarListEvents.decode({ maxResults: 0 }))
      expect(error.message).toContain("maxResults")
    }))
})

describe("gmail.send", () => {
  it.effect("sends a base64url RFC 2822 message with CRLF, MIME headers and an encoded-word subject", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("POST")
        expect(req.rawPath).toBe("/gmail/v1/users/me/messages/send")
        expectAuth(req)
        return { json: { id: "m1", threadId: "t1", labelIds: ["SENT"] } }
      }
      const out = yield* runTool(GmailSend, {
        to: ["bob@example.com", "carol@example.com"],
        cc: ["dan@example.com"],
        subject: "Réunion de décembre",
        body: "Bonjour Bob,\nà demain."
      }, setup())
      expect(out).toEqual({ id: "m1", threadId: "t1", labelIds: ["SENT"] })
      const body = fake.received[0]!.json as { raw: string }
      expect(Object.keys(body)).toEqual(["raw"])
      expect(body.raw).toMatch(/^[A-Za-z0-9_-]+$/)
      const message = decodeRaw(body.raw)
      const [head, content] = message.split("\r\n\r\n")
      expect(message.replace(/\r\n/g, "")).not.toContain("\n")
      expect(head!.split("\r\n")).toEqual([
        "To: bob@example.com, carol@example.com",
        "Cc: dan@example.com",
        `Subject: =?UTF-8?B?${Buffer.from("Réunion de décembre").toString("base64")}?=`,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: base64"
      ])
      expect(Buffer.from(content!, "base64").toString("utf8")).toBe("Bonjour Bob,\r\nà demain.")
    }))

  it("builds multipart/alternative with an html part and folds long non-ASCII subjects", () => {
    const message = buildMessage(
      { to: ["bob@example.com"], subject: "é".repeat(40), body: "text", html: "<p>html</p>" },
      "B0UND"
    )
    expect(message).toContain("Content-Type: multipart/alternative; boundary=\"B0UND\"\r\n")
    const parts = message.split("--B0UND")
    expect(parts).toHaveLength(4)
    expect(parts[1]).toContain("Content-Type: text/plain; charset=UTF-8")
    expect(parts[2]).toContain("Content-Type: text/html; charset=UTF-8")
    expect(Buffer.from(parts[2]!.split("\r\n\r\n")[1]!, "base64").toString()).toBe("<p>html</p>")
    expect(parts[3]).toBe("--\r\n")
    const subject = encodeHeaderWords("é".repeat(40))
    const words = subject.split("\r\n ")
    expect(words.length).toBeGreaterThan(1)
    expect(words.every((w) => w.length <= 75 && /^=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=$/.test(w))).toBe(true)
    expect(words.map((w) => Buffer.from(w.slice(10, -2), "base64").toString()).join("")).toBe("é".repeat(40))
    expect(encodeHeaderWords("Plain subject")).toBe("Plain subject")
  })

  it.effect("refuses header injection through subject or recipients", () =>
    Effect.gen(function*() {
      const subject = yield* Effect.flip(
        GmailSend.decode({ to: ["bob@example.com"], subject: "Hi\r\nBcc: eve@example.com", body: "x" })
      )
      expect(subject._tag).toBe("ToolInputInvalid")
      expect(subject.message).toContain("subject")
      const to = yield* Effect.flip(
        GmailSend.decode({ to: ["bob@example.com\r\nBcc: eve@example.com"], subject: "Hi", body: "x" })
      )
      expect(to.message).toContain("to.0")
      const empty = yield* Effect.flip(GmailSend.decode({ to: [], subject: "Hi", body: "x" }))
      expect(empty.message).toContain("to")
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("fails with Google's message on a documented 400 and needs the connection", () =>
    Effect.gen(function*() {
      fake.handle = () =>
        jsonError(400, {
          code: 400,
          message: "Invalid To header",
          status: "INVALID_ARGUMENT",
          errors: [{ message: "Invalid To header", domain: "global", reason: "invalidArgument" }]
        })
      const error = yield* Effect.flip(
        runTool(GmailSend, { to: ["bob@example.com"], subject: "s", body: "b" }, setup())
      )
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: false, status: 400 })
      expect(error.message).toContain("Invalid To header")
      fake.received.length = 0
      const missing = yield* Effect.flip(
        runTool(GmailSend, { to: ["bob@example.com"], subject: "s", body: "b" }, { ...setup(), credential: undefined })
      )
      expect(missing.message).toContain("no google connection for this tenant")
      expect(fake.received).toHaveLength(0)
    }))
})

describe("gmail.list_messages", () => {
  it.effect("GETs with q, maxResults and pageToken and returns the documented list", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("GET")
        expect(req.rawPath).toBe("/gmail/v1/users/me/messages")
        expectAuth(req)
        return {
          json: { messages: [{ id: "m1", threadId: "t1" }], nextPageToken: "n2", resultSizeEstimate: 42 }
        }
      }
      const out = yield* runTool(GmailListMessages, {
        q: "from:bob is:unread",
        maxResults: 5,
        pageToken: "n1"
      }, setup())
      expect(out).toEqual({ messages: [{ id: "m1", threadId: "t1" }], nextPageToken: "n2", resultSizeEstimate: 42 })
      expect(Object.fromEntries(fake.received[0]!.query)).toEqual({
        q: "from:bob is:unread",
        maxResults: "5",
        pageToken: "n1"
      })
    }))

  it.effect("returns an empty list when Gmail omits messages; 503 is retryable", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ json: { resultSizeEstimate: 0 } })
      expect(yield* runTool(GmailListMessages, {}, setup())).toEqual({ messages: [], resultSizeEstimate: 0 })
      fake.handle = () =>
        jsonError(503, { code: 503, message: "The service is currently unavailable.", status: "UNAVAILABLE" })
      const error = yield* Effect.flip(runTool(GmailListMessages, {}, setup()))
      expect(error).toMatchObject({ retryable: true, status: 503 })
      expect(error.message).toContain("UNAVAILABLE")
    }))
})
