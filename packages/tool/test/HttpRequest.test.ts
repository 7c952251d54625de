import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { HttpRequest, tools, WebhookNotify } from "../src/builtin/HttpRequest.js"
import type { Tool } from "../src/Tool.js"
import type { Fake } from "./vendorFake.js"
import { runTool, startFake } from "./vendorFake.js"

// Only the fake's host:port is operator-allowed; `other` is a live server on another port that must stay untouched.
let fake: Fake
let other: Fake

beforeAll(async () => {
  fake = await startFake()
  other = await startFake(() => ({ json: { reached: true } }))
})
afterAll(() => Promise.all([fake.close(), other.close()]))
beforeEach(() => {
  fake.received.length = 0
  other.received.length = 0
})

const call = (tool: Tool, input: unknown) =>
  runTool(tool, input, {
    operatorAllowHosts: [`127.0.0.1:${fake.port}`],
    allowHosts: ["api.example.com"],
    credential: undefined
  })

describe("utility http tools", () => {
  it("need no credential and have no vendor hosts", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual(["http.request", "webhook.notify"])
    expect(tools.every((t) => t.spec.provider === "utility" && t.hosts.length === 0 && t.spec.side_effect)).toBe(true)
  })
})

describe("http.request", () => {
  it.effect("sends method, headers, query and JSON, and returns status, headers and the parsed body", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ status: 201, json: { ok: true }, headers: { "x-request-id": "r1" } })
      const out = yield* call(HttpRequest, {
        url: `${fake.url}/items?existing=1`,
        method: "POST",
        headers: { "x-api-key": "k1" },
        query: { q: "a b&c" },
        json: { name: "n" }
      })
      expect(out).toMatchObject({ status: 201, body: { ok: true }, headers: { "x-request-id": "r1" } })
      const req = fake.received[0]!
      expect(req.method).toBe("POST")
      expect(req.rawPath).toBe("/items")
      expect(Object.fromEntries(req.query)).toEqual({ existing: "1", q: "a b&c" })
      expect(req.headers["x-api-key"]).toBe("k1")
      expect(req.headers["content-type"]).toBe("application/json")
      expect(req.json).toEqual({ name: "n" })
    }))

  it.effect("returns non-2xx answers as data, text bodies as text", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ status: 503, text: "down for maintenance", headers: { "content-type": "text/plain" } })
      const out = yield* call(HttpRequest, { url: `${fake.url}/health` })
      expect(out).toMatchObject({ status: 503, body: "down for maintenance" })
      expect(fake.received[0]!.method).toBe("GET")
      fake.handle = () => jsonError404
      expect(yield* call(HttpRequest, { url: `${fake.url}/x`, method: "DELETE" })).toMatchObject({
        status: 404,
        body: { error: "not found" }
      })
    }))

  it.effect("fails with egress_denied, without a request, outside the allowlist", () =>
    Effect.gen(function*() {
      const port = yield* Effect.flip(call(HttpRequest, { url: `${other.url}/` }))
      expect(port).toMatchObject({ _tag: "ToolFailed", retryable: false })
      expect(port.message).toMatch(/^egress_denied: /)
      const metadata = yield* Effect.flip(call(HttpRequest, { url: "http://169.254.169.254/latest/meta-data/" }))
      expect(metadata.message).toMatch(/^egress_denied: /)
      expect(other.received).toHaveLength(0)
    }))

  it.effect("rejects invalid input naming the field", () =>
    Effect.gen(function*() {
      const both = yield* Effect.flip(
        HttpRequest.decode({ url: "https://a.example", method: "POST", json: {}, body: "" })
      )
      expect(both.message).toContain("body")
      const get = yield* Effect.flip(HttpRequest.decode({ url: "https://a.example", json: { a: 1 } }))
      expect(get.message).toContain("json")
      const header = yield* Effect.flip(HttpRequest.decode({ url: "https://a.example", headers: { x: "a\r\nb: c" } }))
      expect(header.message).toContain("headers.x")
      const scheme = yield* Effect.flip(HttpRequest.decode({ url: "file:///etc/passwd" }))
      expect(scheme.message).toContain("url")
    }))
})

const jsonError404 = { status: 404, json: { error: "not found" } }

describe("webhook.notify", () => {
  it.effect("POSTs {event, payload, sent_at} as JSON with the webhook user-agent", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ status: 204 })
      const before = Date.now()
      const out = yield* call(WebhookNotify, {
        url: `${fake.url}/hooks/1`,
        event: "order.created",
        payload: { id: 7 }
      })
      expect(out).toEqual({ status: 204 })
      const req = fake.received[0]!
      expect(req.method).toBe("POST")
      expect(req.rawPath).toBe("/hooks/1")
      expect(req.headers["content-type"]).toBe("application/json")
      expect(req.headers["user-agent"]).toBe("altan-webhook/1")
      const body = req.json as { event: string; payload: unknown; sent_at: string }
      expect(Object.keys(body)).toEqual(["event", "payload", "sent_at"])
      expect(body).toMatchObject({ event: "order.created", payload: { id: 7 } })
      expect(Date.parse(body.sent_at)).toBeGreaterThanOrEqual(before - 1000)
      expect(body.sent_at).toMatch(/Z$/)
    }))

  it.effect("fails on non-2xx: 4xx not retryable, 5xx retryable", () =>
    Effect.gen(function*() {
      fake.handle = () => ({ status: 410, text: "gone" })
      const gone = yield* Effect.flip(call(WebhookNotify, { url: `${fake.url}/h`, event: "e", payload: null }))
      expect(gone).toMatchObject({ _tag: "ToolFailed", retryable: false, status: 410, body_excerpt: "gone" })
      fake.handle = () => ({ status: 502, text: "bad gateway" })
      const bad = yield* Effect.flip(call(WebhookNotify, { url: `${fake.url}/h`, event: "e", payload: null }))
      expect(bad).toMatchObject({ retryable: true, status: 502 })
    }))

  it.effect("is bound to the allowlist and requires payload", () =>
    Effect.gen(function*() {
      const denied = yield* Effect.flip(call(WebhookNotify, { url: `${other.url}/h`, event: "e", payload: 1 }))
      expect(denied.message).toMatch(/^egress_denied: /)
      expect(other.received).toHaveLength(0)
      const missing = yield* Effect.flip(WebhookNotify.decode({ url: "https://a.example/h", event: "e" }))
      expect(missing.message).toContain("payload")
    }))
})
