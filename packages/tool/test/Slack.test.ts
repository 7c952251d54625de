import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { ChannelHistory, CreateChannel, PostMessage, tools } from "../src/builtin/Slack.js"
import type { Fake, Received, Reply } from "./vendorFake.js"
import { failureOf, runTool, startFake, TOKEN } from "./vendorFake.js"

// A fake Slack Web API: documented methods, request checks, and the documented ok/error bodies.
const slack = (req: Received): Reply => {
  if (req.headers.authorization !== TOKEN) return { json: { ok: false, error: "invalid_auth" } }
  switch (`${req.method} ${req.path}`) {
    case "POST /api/chat.postMessage": {
      if (!String(req.headers["content-type"]).startsWith("application/json")) {
        return { json: { ok: false, error: "invalid_form_data" } }
      }
      const { blocks, channel, text, thread_ts, ...rest } = req.json ?? {}
      if (typeof channel !== "string" || typeof text !== "string" || Object.keys(rest).length > 0) {
        return { json: { ok: false, error: "invalid_arguments" } }
      }
      if (channel === "C_MISSING") return { json: { ok: false, error: "channel_not_found" } }
      if (channel === "C_BUSY") {
        return { status: 429, headers: { "retry-after": "30" }, json: { ok: false, error: "ratelimited" } }
      }
      if (channel === "C_DOWN") return { status: 503, text: "upstream unavailable" }
      return {
        json: {
          ok: true,
          channel,
          ts: "1712345678.000200",
          message: { type: "message", text, user: "U0BOT", ts: "1712345678.000200", thread_ts, blocks },
          warning: "missing_charset"
        }
      }
    }
    case "POST /api/conversations.create": {
      const { is_private, name } = req.json ?? {}
      if (name === "general") return { json: { ok: false, error: "name_taken" } }
      return {
        json: {
          ok: true,
          channel: { id: "C0NEW", name, is_channel: true, is_private: is_private === true, created: 1712345678 }
        }
      }
    }
    case "GET /api/conversations.history": {
      if (req.query.get("channel") !== "C123") return { json: { ok: false, error: "channel_not_found" } }
      if (req.query.get("cursor") === "bm9wZQ==") return { json: { ok: false, error: "invalid_cursor" } }
      return {
        json: {
          ok: true,
          messages: [
            { type: "message", user: "U1", text: "second", ts: "1712345679.000100", reply_count: 2, thread_ts: "1" },
            { type: "message", subtype: "bot_message", bot_id: "B1", text: "first", ts: "1712345678.000100" }
          ],
          has_more: true,
          pin_count: 0,
          response_metadata: { next_cursor: "bmV4dA==" }
        }
      }
    }
    default:
      return { status: 404, json: { ok: false, error: "unknown_method" } }
  }
}

let fake: Fake
const setup = () => ({ baseUrl: `${fake.url}/api` })

beforeAll(async () => {
  fake = await startFake(slack)
})
afterAll(() => fake.close())
beforeEach(() => {
  fake.received.length = 0
})

describe("slack tools", () => {
  it("are advertised with the slack provider, the Slack host and their side effects", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual([
      "slack.post_message",
      "slack.create_channel",
      "slack.channel_history"
    ])
    for (const t of tools) {
      expect(t.spec.provider).toBe("slack")
      expect(t.hosts).toEqual(["slack.com"])
    }
    expect(PostMessage.spec.side_effect).toBe(true)
    expect(CreateChannel.spec.side_effect).toBe(true)
    expect(ChannelHistory.spec).toMatchObject({ side_effect: false, cacheable: true })
  })

  it.effect("post_message posts JSON with the credential and returns channel and ts", () =>
    Effect.gen(function*() {
      const blocks = [{ type: "section", text: { type: "mrkdwn", text: "*hi*" } }]
      const out = yield* runTool(
        PostMessage,
        { channel: "C123", text: "hi", thread_ts: "1712345600.000100", blocks },
        setup()
      )
      expect(out).toEqual({ channel: "C123", ts: "1712345678.000200" })
      expect(fake.received).toHaveLength(1)
      const [req] = fake.received
      expect(req!.method).toBe("POST")
      expect(req!.json).toEqual({ channel: "C123", text: "hi", thread_ts: "1712345600.000100", blocks })
      expect(req!.headers.accept).toBe("application/json")
    }))

  it.effect("ok: false with HTTP 200 becomes a ToolFailed naming the Slack error code", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(PostMessage, { channel: "C_MISSING", text: "hi" }, setup()))
      expect(error._tag).toBe("ToolFailed")
      expect(error.message).toContain("channel_not_found")
      expect(error.retryable).toBe(false)
    }))

  it.effect("a 429 ratelimited answer is retryable and says when", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(PostMessage, { channel: "C_BUSY", text: "hi" }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: true, status: 429 })
      expect(error.message).toContain("ratelimited")
      expect(error.message).toContain("retry after 30 s")
    }))

  it.effect("a 503 is retryable", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(PostMessage, { channel: "C_DOWN", text: "hi" }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: true, status: 503 })
    }))

  it.effect("a missing credential fails before any request", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(
        runTool(PostMessage, { channel: "C123", text: "hi" }, { ...setup(), credential: undefined })
      )
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: false })
      expect(error.message).toBe("no slack connection for this tenant: connect it with PUT /v1/connections/slack")
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("a rejected credential is reported as invalid_auth with a reconnect hint", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(
        runTool(PostMessage, { channel: "C123", text: "hi" }, {
          ...setup(),
          credential: { header: "Authorization", value: Redacted.make("Bearer wrong-token") }
        })
      )
      expect(error.message).toContain("invalid_auth")
      expect(error.message).toContain("reconnect")
      expect(error.message).not.toContain("wrong-token")
      expect(error.retryable).toBe(false)
    }))

  it.effect("create_channel sends name and is_private and returns the channel", () =>
    Effect.gen(function*() {
      const out = yield* runTool(CreateChannel, { name: "proj-apollo", is_private: true }, setup())
      expect(out).toEqual({ channel: { id: "C0NEW", name: "proj-apollo", is_private: true } })
      expect(fake.received[0]!.json).toEqual({ name: "proj-apollo", is_private: true })
      const taken = yield* failureOf(runTool(CreateChannel, { name: "general" }, setup()))
      expect(taken.message).toContain("name_taken")
    }))

  it.effect("create_channel rejects names Slack would refuse before calling it", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(CreateChannel, { name: "Project Apollo" }, setup()))
      expect(error._tag).toBe("ToolInputInvalid")
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("channel_history sends the query and returns typed messages and the next cursor", () =>
    Effect.gen(function*() {
      const out = yield* runTool(ChannelHistory, { channel: "C123", limit: 2, cursor: "abc=" }, setup())
      expect(out).toEqual({
        messages: [
          { ts: "1712345679.000100", user: "U1", text: "second", reply_count: 2, thread_ts: "1" },
          { ts: "1712345678.000100", bot_id: "B1", text: "first" }
        ],
        has_more: true,
        next_cursor: "bmV4dA=="
      })
      const [req] = fake.received
      expect(req!.method).toBe("GET")
      expect(Object.fromEntries(req!.query)).toEqual({ channel: "C123", limit: "2", cursor: "abc=" })
      expect(req!.text).toBe("")
    }))

  it.effect("channel_history reports Slack errors by code", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(ChannelHistory, { channel: "C999" }, setup()))
      expect(error.message).toContain("channel_not_found")
      expect(fake.received[0]!.query.get("limit")).toBe("100")
    }))
})
