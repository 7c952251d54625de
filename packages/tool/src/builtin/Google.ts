import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createHash, randomUUID } from "node:crypto"
import * as Tool from "../Tool.js"
import {
  answeredHttp,
  baseUrlOf,
  colonDetail,
  decodeVendor,
  errorField,
  optional,
  PathSegment,
  segment,
  vendorCall
} from "./Vendor.js"

const PROVIDER = "google"
const CALENDAR_HOST = "www.googleapis.com"
const GMAIL_HOST = "gmail.googleapis.com"

/** `404 NOT_FOUND: Not Found` out of Google's `{"error": {"code", "message", "status"}}` body. */
const googleError = (body: unknown): string | undefined => {
  const error = errorField(body)
  if (error === undefined || typeof error.message !== "string") return undefined
  return typeof error.status === "string" ? `${error.status}: ${error.message}` : error.message
}

const google = (toolId: string, ctx: Tool.ToolContext, url: string, method: "GET" | "POST", json?: unknown) =>
  vendorCall({
    toolId,
    provider: PROVIDER,
    ctx,
    url,
    method,
    ...(json !== undefined ? { json } : {}),
    onError: answeredHttp("Google", colonDetail(googleError))
  })

// ---------------------------------------------------------------------------------------------------------------
// Calendar

const DATE = /^\d{4}-\d{2}-\d{2}$/
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/i

const DateTimeString = Schema.String.pipe(Schema.pattern(DATE_TIME, {
  message: () => "must be an RFC 3339 date-time like 2025-03-01T09:00:00+01:00"
}))
const DateString = Schema.String.pipe(Schema.pattern(DATE, { message: () => "must be a date like 2025-03-01" }))

const EventTimeInput = Schema.Union(
  Schema.Struct({
    dateTime: DateTimeString,
    timeZone: optional(Schema.NonEmptyTrimmedString.annotations({ description: "IANA zone, e.g. Europe/Paris." }))
  }),
  Schema.Struct({ date: DateString }),
  Schema.String.pipe(Schema.pattern(new RegExp(`${DATE.source}|${DATE_TIME.source}`, "i"), {
    message: () => "must be an RFC 3339 date-time, a date, {dateTime, timeZone?} or {date}"
  }))
).annotations({
  description: "{\"dateTime\": RFC 3339, \"timeZone\"?: IANA zone} for a timed event, {\"date\": \"YYYY-MM-DD\"} " +
    "for an all-day event (end date exclusive), or a plain string of either form. A dateTime without an offset " +
    "needs timeZone."
})

const toEventTime = (time: typeof EventTimeInput.Type) =>
  typeof time !== "string" ? time : DATE.test(time) ? { date: time } : { dateTime: time }

const EventTime = Schema.Struct({
  dateTime: optional(Schema.String),
  date: optional(Schema.String),
  timeZone: optional(Schema.String)
})

const Event = Schema.Struct({
  id: Schema.String,
  htmlLink: optional(Schema.String).annotations({ description: "Link to the event in Google Calendar." }),
  status: optional(Schema.String).annotations({ description: "confirmed, tentative or cancelled." }),
  start: optional(EventTime),
  end: optional(EventTime),
  summary: optional(Schema.String)
})

const CalendarId = PathSegment.annotations({
  description: "Calendar id, e.g. an email address; default \"primary\" (the connected user's calendar)."
})

const Email = Schema.String.pipe(Schema.pattern(/^[^\s@<>,;:"()\\[\]]+@[^\s@<>,;:"()\\[\]]+$/, {
  message: () => "must be a plain email address like bob@example.com"
}))

export const CreateEventInput = Schema.Struct({
  calendarId: optional(CalendarId),
  summary: Schema.String.pipe(Schema.maxLength(1024)).annotations({ description: "The event title." }),
  description: optional(Schema.String),
  location: optional(Schema.String),
  start: EventTimeInput,
  end: EventTimeInput,
  attendees: optional(Schema.Array(Schema.Struct({ email: Email }))),
  sendUpdates: optional(
    Schema.Literal("all", "externalOnly", "none").annotations({
      description: "Who gets invitation emails; Google's default is none."
    })
  )
})

/** `google_calendar.create_event`: creates an event (POST calendars/{calendarId}/events). */
export const CalendarCreateEvent: Tool.Tool = Tool.make({
  id: "google_calendar.create_event",
  name: "Create a Google Calendar event",
  description: "Creates an event in the tenant's connected Google Calendar (calendarId default \"primary\"). " +
    "`start` and `end` take {dateTime: RFC 3339, timeZone?} for a timed event or {date: YYYY-MM-DD} for an " +
    "all-day event (end date exclusive); a plain ISO string also works. attendees are [{email}]; set " +
    "sendUpdates \"all\" to email them invitations. Returns {id, htmlLink, status, start, end, summary}.",
  provider: PROVIDER,
  needsConnection: true,
  input: CreateEventInput,
  output: Event,
  sideEffect: true,
  idempotencyKey: true,
  hosts: [CALENDAR_HOST],
  run: (input, ctx) => {
    const id = "google_calendar.create_event"
    const base = baseUrlOf(ctx, PROVIDER, `https://${CALENDAR_HOST}`)
    const events = `${base}/calendar/v3/calendars/${segment(input.calendarId ?? "primary")}/events`
    const url = new URL(events)
    if (input.sendUpdates !== undefined) url.searchParams.set("sendUpdates", input.sendUpdates)
    // A client-chosen event id makes the insert idempotent: a retry of an insert that did happen gets 409,
    // and the event it made is read back instead of created twice.
    const eventId = ctx.idempotencyKey === undefined ? undefined : calendarEventId(ctx.idempotencyKey)
    const event = {
      ...(eventId !== undefined ? { id: eventId } : {}),
      summary: input.summary,
      ...(input.description !== undefined ? { description: input.description } : {}),
      ...(input.location !== undefined ? { location: input.location } : {}),
      start: toEventTime(input.start),
      end: toEventTime(input.end),
      ...(input.attendees !== undefined ? { attendees: input.attendees.map((a) => ({ email: a.email })) } : {})
    }
    return google(id, ctx, url.href, "POST", event).pipe(
      Effect.catchIf(
        (e) => e.status === 409 && eventId !== undefined,
        () => google(id, ctx, `${events}/${eventId}`, "GET")
      ),
      Effect.flatMap(decodeVendor(id, Event))
    )
  }
})

/** An event id from an idempotency key: base32hex (`0-9a-v`), as Calendar requires of client-chosen ids. */
const calendarEventId = (key: string) => {
  const digits = "0123456789abcdefghijklmnopqrstuv"
  const bytes = createHash("sha256").update(key).digest()
  let out = ""
  for (let i = 0; i < 26; i++) out += digits[bytes[i]! & 31]
  return `altan${out}`
}

export const ListEventsInput = Schema.Struct({
  calendarId: optional(CalendarId),
  timeMin: optional(
    DateTimeString.annotations({ description: "Only events ending after this (RFC 3339 with offset)." })
  ),
  timeMax: optional(DateTimeString.annotations({ description: "Only events starting before this (RFC 3339)." })),
  q: optional(Schema.String.annotations({ description: "Free-text search in summary, description, location, …" })),
  maxResults: optional(
    Schema.Int.pipe(Schema.between(1, 2500)).annotations({ description: "Page size; default 250." })
  ),
  pageToken: optional(Schema.String.annotations({ description: "nextPageToken of the previous page." }))
})

const EventList = Schema.Struct({
  items: Schema.optionalWith(Schema.Array(Event), { default: () => [] }),
  nextPageToken: optional(Schema.String)
})

/** `google_calendar.list_events`: single events in start-time order (GET calendars/{calendarId}/events). */
export const CalendarListEvents: Tool.Tool = Tool.make({
  id: "google_calendar.list_events",
  name: "List Google Calendar events",
  description: "Lists events of the tenant's connected Google Calendar (calendarId default \"primary\"), " +
    "recurring events expanded into single instances, ordered by start time. Filter with timeMin/timeMax " +
    "(RFC 3339 with offset, e.g. 2025-03-01T00:00:00Z) and q (free text). Returns {items: [{id, htmlLink, status, " +
    "start, end, summary}], nextPageToken?}; pass nextPageToken as pageToken for the next page.",
  provider: PROVIDER,
  needsConnection: true,
  input: ListEventsInput,
  output: Schema.Struct({ items: Schema.Array(Event), nextPageToken: optional(Schema.String) }),
  cacheable: true,
  hosts: [CALENDAR_HOST],
  run: (input, ctx) => {
    const id = "google_calendar.list_events"
    const base = baseUrlOf(ctx, PROVIDER, `https://${CALENDAR_HOST}`)
    const url = new URL(`${base}/calendar/v3/calendars/${segment(input.calendarId ?? "primary")}/events`)
    const params = url.searchParams
    if (input.timeMin !== undefined) params.set("timeMin", input.timeMin)
    if (input.timeMax !== undefined) params.set("timeMax", input.timeMax)
    if (input.q !== undefined) params.set("q", input.q)
    if (input.maxResults !== undefined) params.set("maxResults", String(input.maxResults))
    params.set("singleEvents", "true")
    params.set("orderBy", "startTime")
    if (input.pageToken !== undefined) params.set("pageToken", input.pageToken)
    return google(id, ctx, url.href, "GET").pipe(Effect.flatMap(decodeVendor(id, EventList)))
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Gmail

const NoLineBreak = Schema.String.pipe(Schema.pattern(/^[^\r\n\0]*$/, {
  message: () => "must not contain line breaks"
}))

export const GmailSendInput = Schema.Struct({
  to: Schema.NonEmptyArray(Email).annotations({ description: "Recipient addresses, e.g. [\"bob@example.com\"]." }),
  cc: optional(Schema.Array(Email)),
  bcc: optional(Schema.Array(Email)),
  subject: NoLineBreak.pipe(Schema.maxLength(900)).annotations({ description: "The subject line (any language)." }),
  body: Schema.String.annotations({ description: "The plain-text body." }),
  html: optional(Schema.String.annotations({
    description: "An HTML version of the body; the message is then multipart/alternative (text and HTML)."
  }))
})
export type GmailSendInput = typeof GmailSendInput.Type

const CRLF = "\r\n"

/** RFC 2047 B encoded-words of at most 75 characters, never splitting a character; ASCII text stays as is. */
export const encodeHeaderWords = (text: string): string => {
  if (/^[\x20-\x7e]*$/.test(text)) return text
  const words: Array<string> = []
  let chunk = ""
  for (const char of text) {
    // 45 bytes encode to 60 base64 characters: "=?UTF-8?B?" + 60 + "?=" = 72 <= 75.
    if (Buffer.byteLength(chunk + char) > 45) {
      words.push(chunk)
      chunk = ""
    }
    chunk += char
  }
  if (chunk !== "") words.push(chunk)
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, "utf8").toString("base64")}?=`).join(`${CRLF} `)
}

const base64Lines = (text: string): string =>
  (Buffer.from(text.replace(/\r?\n/g, CRLF), "utf8").toString("base64").match(/.{1,76}/g) ?? []).join(CRLF)

const part = (
  contentType: string,
  text: string
) => [`Content-Type: ${contentType}; charset=UTF-8`, "Content-Transfer-Encoding: base64", "", base64Lines(text)]

/** An RFC 2822 message with CRLF line endings; inputs carry no line breaks into headers (checked by the schema). */
export const buildMessage = (input: GmailSendInput, boundary = `altan-${randomUUID()}`): string => {
  const headers = [`To: ${input.to.join(", ")}`]
  if (input.cc !== undefined && input.cc.length > 0) headers.push(`Cc: ${input.cc.join(", ")}`)
  if (input.bcc !== undefined && input.bcc.length > 0) headers.push(`Bcc: ${input.bcc.join(", ")}`)
  headers.push(`Subject: ${encodeHeaderWords(input.subject)}`, "MIME-Version: 1.0")
  const lines = input.html === undefined
    ? [...headers, ...part("text/plain", input.body)]
    : [
      ...headers,
      `Content-Type: multipart/alternative; boundary="${boundary}"`,
      "",
      `--${boundary}`,
      ...part("text/plain", input.body),
      `--${boundary}`,
      ...part("text/html", input.html),
      `--${boundary}--`
    ]
  return lines.join(CRLF) + CRLF
}

const SentMessage = Schema.Struct({
  id: Schema.String,
  threadId: Schema.String,
  labelIds: optional(Schema.Array(Schema.String))
})

/** `gmail.send`: sends an email from the connected Gmail account (POST users/me/messages/send). */
export const GmailSend: Tool.Tool = Tool.make({
  id: "gmail.send",
  name: "Send an email with Gmail",
  description: "Sends an email from the tenant's connected Gmail account (the sender is that account). `to`, " +
    "`cc` and `bcc` are lists of plain addresses like \"bob@example.com\"; `subject` is one line; `body` is plain " +
    "text; give `html` too for an HTML version. Returns {id, threadId, labelIds?} of the sent message.",
  provider: PROVIDER,
  needsConnection: true,
  input: GmailSendInput,
  output: SentMessage,
  sideEffect: true,
  hosts: [GMAIL_HOST],
  run: (input, ctx) =>
    Effect.gen(function*() {
      const id = "gmail.send"
      // The schema already refuses line breaks; this guards callers that skip `decode`.
      const headerText = [...input.to, ...(input.cc ?? []), ...(input.bcc ?? []), input.subject]
      if (headerText.some((value) => /[\r\n]/.test(value))) {
        return yield* new ToolFailed({ tool_id: id, message: "gmail.send: line breaks in headers", retryable: false })
      }
      const raw = Buffer.from(buildMessage(input), "utf8").toString("base64url")
      const base = baseUrlOf(ctx, PROVIDER, `https://${GMAIL_HOST}`)
      const body = yield* google(id, ctx, `${base}/gmail/v1/users/me/messages/send`, "POST", { raw })
      return yield* decodeVendor(id, SentMessage)(body)
    })
})

export const GmailListInput = Schema.Struct({
  q: optional(Schema.String.annotations({
    description:
      "Gmail search query, as in the Gmail search box, e.g. \"from:bob@example.com is:unread newer_than:7d\"."
  })),
  maxResults: optional(Schema.Int.pipe(Schema.between(1, 500)).annotations({ description: "Page size; default 100." })),
  pageToken: optional(Schema.String.annotations({ description: "nextPageToken of the previous page." }))
})

const MessageRef = Schema.Struct({ id: Schema.String, threadId: Schema.String })

const MessageList = Schema.Struct({
  // Gmail leaves `messages` out when nothing matches.
  messages: Schema.optionalWith(Schema.Array(MessageRef), { default: () => [] }),
  nextPageToken: optional(Schema.String),
  resultSizeEstimate: Schema.optionalWith(Schema.Number, { default: () => 0 })
})

/** `gmail.list_messages`: ids of messages matching a Gmail search (GET users/me/messages). */
export const GmailListMessages: Tool.Tool = Tool.make({
  id: "gmail.list_messages",
  name: "List Gmail messages",
  description: "Lists messages of the tenant's connected Gmail account matching `q` (Gmail search syntax), " +
    "newest first. Returns {messages: [{id, threadId}], nextPageToken?, resultSizeEstimate} — ids only, no " +
    "content; pass nextPageToken as pageToken for the next page.",
  provider: PROVIDER,
  needsConnection: true,
  input: GmailListInput,
  output: Schema.Struct({
    messages: Schema.Array(MessageRef),
    nextPageToken: optional(Schema.String),
    resultSizeEstimate: Schema.Number
  }),
  cacheable: true,
  hosts: [GMAIL_HOST],
  run: (input, ctx) => {
    const id = "gmail.list_messages"
    const url = new URL(`${baseUrlOf(ctx, PROVIDER, `https://${GMAIL_HOST}`)}/gmail/v1/users/me/messages`)
    if (input.q !== undefined) url.searchParams.set("q", input.q)
    if (input.maxResults !== undefined) url.searchParams.set("maxResults", String(input.maxResults))
    if (input.pageToken !== undefined) url.searchParams.set("pageToken", input.pageToken)
    return google(id, ctx, url.href, "GET").pipe(Effect.flatMap(decodeVendor(id, MessageList)))
  }
})

/** Google Calendar and Gmail tools; they use the tenant's `google` credential. */
export const tools: ReadonlyArray<Tool.Tool> = [CalendarCreateEvent, CalendarListEvents, GmailSend, GmailListMessages]
