import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { OutlookCreateEvent, TeamsPostChannelMessage, tools } from "../src/builtin/Microsoft.js"
import type { Fake } from "./vendorFake.js"
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

const TEAM = "fbe2bf47-16c8-47cf-b4a5-4b9b187c508b"
const CHANNEL = "19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2"

const chatMessage = {
  "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#teams('x')/channels('y')/messages/$entity",
  id: "1616990032035",
  replyToId: null,
  messageType: "message",
  createdDateTime: "2021-03-29T03:53:52.035Z",
  webUrl: "https://teams.microsoft.com/l/message/19%3A4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2/1616990032035",
  body: { contentType: "html", content: "Hello World" }
}

const unauthorized = jsonError(401, {
  code: "InvalidAuthenticationToken",
  message: "Access token validation failure. Invalid audience.",
  innerError: { date: "2025-03-01T10:00:00", "request-id": "r1", "client-request-id": "c1" }
})

describe("microsoft tools", () => {
  it("advertises provider, hosts and side effects", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual(["teams.post_channel_message", "outlook.create_event"])
    expect(tools.every((t) => t.spec.provider === "microsoft" && t.spec.side_effect)).toBe(true)
    expect(tools.every((t) => t.hosts.join() === "graph.microsoft.com")).toBe(true)
  })
})

describe("teams.post_channel_message", () => {
  it.effect("POSTs {body: {contentType, content}} to the channel's messages and returns the message", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("POST")
        expect(req.headers.authorization).toBe(TOKEN)
        return { status: 201, json: chatMessage }
      }
      const out = yield* runTool(TeamsPostChannelMessage, {
        teamId: TEAM,
        channelId: CHANNEL,
        content: "Hello"
      }, setup())
      expect(out).toEqual({
        id: chatMessage.id,
        webUrl: chatMessage.webUrl,
        createdDateTime: chatMessage.createdDateTime
      })
      expect(fake.received[0]!.rawPath).toBe(`/v1.0/teams/${TEAM}/channels/${encodeURIComponent(CHANNEL)}/messages`)
      expect(fake.received[0]!.json).toEqual({ body: { contentType: "text", content: "Hello" } })
    }))

  it.effect("keeps ids with / inside one path segment and refuses ..", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ status: 201, json: chatMessage })
      yield* runTool(TeamsPostChannelMessage, {
        teamId: "../../me/sendMail?x=",
        channelId: "c/../d",
        content: "<b>x</b>",
        contentType: "html"
      }, setup())
      expect(fake.received[0]!.rawPath).toBe("/v1.0/teams/..%2F..%2Fme%2FsendMail%3Fx%3D/channels/c%2F..%2Fd/messages")
      expect(fake.received[0]!.query.toString()).toBe("")
      expect(fake.received[0]!.json).toEqual({ body: { contentType: "html", content: "<b>x</b>" } })
      const error = yield* Effect.flip(TeamsPostChannelMessage.decode({ teamId: "..", channelId: "c", content: "x" }))
      expect(error.message).toContain("teamId")
    }))

  it.effect("fails with Graph's code and message, not retryable", () =>
    Effect.gen(function*() {
      fake.handle = () => unauthorized
      const error = yield* Effect.flip(
        runTool(TeamsPostChannelMessage, { teamId: TEAM, channelId: CHANNEL, content: "Hello" }, setup())
      )
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: false, status: 401 })
      expect(error.message).toContain("InvalidAuthenticationToken: Access token validation failure. Invalid audience.")
    }))

  it.effect("marks 429 and 503 retryable", () =>
    Effect.gen(function*() {
      fake.handle = () => ({
        ...jsonError(429, { code: "TooManyRequests", message: "Too many requests" }),
        headers: { "retry-after": "2" }
      })
      const limited = yield* Effect.flip(
        runTool(TeamsPostChannelMessage, { teamId: TEAM, channelId: CHANNEL, content: "Hello" }, setup())
      )
      expect(limited).toMatchObject({ retryable: true, status: 429 })
      expect(limited.message).toContain("TooManyRequests")
      fake.handle = () => jsonError(503, { code: "serviceNotAvailable", message: "Service unavailable" })
      const down = yield* Effect.flip(
        runTool(TeamsPostChannelMessage, { teamId: TEAM, channelId: CHANNEL, content: "Hello" }, setup())
      )
      expect(down).toMatchObject({ retryable: true, status: 503 })
    }))

  it.effect("fails without a request when the tenant has no microsoft connection", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        runTool(TeamsPostChannelMessage, { teamId: TEAM, channelId: CHANNEL, content: "Hello" }, {
          ...setup(),
          credential: undefined
        })
      )
      expect(error).toMatchObject({
        retryable: false,
        message: "no microsoft connection for this tenant: connect it with PUT /v1/connections/microsoft"
      })
      expect(fake.received).toHaveLength(0)
    }))
})

describe("outlook.create_event", () => {
  const input = {
    subject: "Let's go for lunch",
    body: { contentType: "html", content: "Does noon work for you?" },
    start: { dateTime: "2025-03-15T12:00:00", timeZone: "Pacific Standard Time" },
    end: { dateTime: "2025-03-15T14:00:00", timeZone: "Pacific Standard Time" },
    location: "Harry's Bar",
    attendees: [{ email: "samanthab@contoso.com", name: "Samantha Booth" }, {
      email: "dan@contoso.com",
      type: "optional"
    }]
  }

  it.effect("POSTs the documented event to /me/events and returns the event", () =>
    Effect.gen(function*() {
      fake.handle = (req) => {
        expect(req.method).toBe("POST")
        expect(req.rawPath).toBe("/v1.0/me/events")
        expect(req.headers.authorization).toBe(TOKEN)
        return {
          status: 201,
          json: {
            id: "AAMkAGI1AAAt9AHjAAA=",
            webLink: "https://outlook.office365.com/owa/?itemid=AAMkAGI1AAAt9AHjAAA%3D",
            subject: input.subject,
            start: { dateTime: "2025-03-15T12:00:00.0000000", timeZone: "Pacific Standard Time" },
            end: { dateTime: "2025-03-15T14:00:00.0000000", timeZone: "Pacific Standard Time" },
            isOrganizer: true
          }
        }
      }
      const out = yield* runTool(OutlookCreateEvent, input, setup())
      expect(out).toEqual({
        id: "AAMkAGI1AAAt9AHjAAA=",
        webLink: "https://outlook.office365.com/owa/?itemid=AAMkAGI1AAAt9AHjAAA%3D",
        subject: input.subject,
        start: { dateTime: "2025-03-15T12:00:00.0000000", timeZone: "Pacific Standard Time" },
        end: { dateTime: "2025-03-15T14:00:00.0000000", timeZone: "Pacific Standard Time" }
      })
      expect(fake.received[0]!.json).toEqual({
        subject: input.subject,
        body: input.body,
        start: input.start,
        end: input.end,
        location: { displayName: "Harry's Bar" },
        attendees: [
          { emailAddress: { address: "samanthab@contoso.com", name: "Samantha Booth" }, type: "required" },
          { emailAddress: { address: "dan@contoso.com" }, type: "optional" }
        ]
      })
    }))

  it.effect("fails with Graph's message on a documented 400", () =>
    Effect.gen(function*() {
      fake.handle = () => jsonError(400, { code: "ErrorInvalidRequest", message: "Your request can't be completed." })
      const error = yield* Effect.flip(runTool(OutlookCreateEvent, input, setup()))
      expect(error).toMatchObject({ retryable: false, status: 400 })
      expect(error.message).toContain("ErrorInvalidRequest: Your request can't be completed.")
    }))

  it.effect("rejects invalid input naming the field", () =>
    Effect.gen(function*() {
      const offset = yield* Effect.flip(
        OutlookCreateEvent.decode({ ...input, start: { dateTime: "2025-03-15T12:00:00Z", timeZone: "UTC" } })
      )
      expect(offset.message).toContain("start.dateTime")
      const zone = yield* Effect.flip(OutlookCreateEvent.decode({ ...input, end: { dateTime: "2025-03-15T12:00:00" } }))
      expect(zone.message).toContain("end.timeZone")
      const attendee = yield* Effect.flip(OutlookCreateEvent.decode({ ...input, attendees: [{ email: "nope" }] }))
      expect(attendee.message).toContain("attendees.0.email")
    }))
})
