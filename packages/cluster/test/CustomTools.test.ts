import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createServer, type Server } from "node:http"
import { makeProbes, startEdge } from "./fixtures.js"

/** The seed's custom tool, exactly as the seed writes it. */
const slackNotify = {
  tool_id: "slack_notify",
  name: "Send Slack Notification",
  description: "Sends a message to a Slack channel",
  parameters: [{ name: "channel_id", type: "string" }, { name: "message", type: "string" }],
  endpoint: "https://slack.com/api/chat.postMessage",
  method: "POST",
  auth: "oauth2"
}

/** A loopback stand-in for slack.com that records what reaches it. */
const received: Array<{ method: string; path: string; authorization?: string | undefined; body: any }> = []
let slack: Server
let slackBase = ""
let edge: Awaited<ReturnType<typeof startEdge>>
let adminA = ""
let memberA = ""
let adminB = ""

const call = (method: string, path: string, token: string, body?: unknown) => edge.call(method, path, token, body)

beforeAll(async () => {
  slack = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined
      received.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization, body })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ ok: true, channel: body?.channel_id, ts: "1700000000.000100" }))
    })
  })
  await new Promise<void>((r) => slack.listen(0, "127.0.0.1", r))
  slackBase = `http://127.0.0.1:${(slack.address() as { port: number }).port}`
  edge = await startEdge(makeProbes())
  adminA = await edge.sign({ tenant_id: "tenant-a", role: "admin" })
  memberA = await edge.sign({ tenant_id: "tenant-a", role: "member" })
  adminB = await edge.sign({ tenant_id: "tenant-b", role: "admin" })
  // tenant A: the seed's tool, a Slack token connection, and Slack pointed at the loopback stand-in
  expect((await call("PUT", "/v1/secrets/slack_token", adminA, { value: "xoxb-tenant-a" })).status).toBe(204)
  expect(
    (await call("PUT", "/v1/connections/slack", adminA, { type: "api_key", secret: "slack_token", prefix: "Bearer " }))
      .status
  ).toBe(200)
  expect((await call("PUT", "/v1/settings", adminA, { providers: { slack: { base_url: slackBase } } })).status).toBe(
    200
  )
})

afterAll(async () => {
  await edge.close()
  slack.closeAllConnections()
  await new Promise((r) => slack.close(r))
})

describe("connection status", () => {
  it("an api_key or OAuth connection whose secret is not stored says missing_secret, until it is", async () => {
    const put = await call("PUT", "/v1/connections/hubspot", adminA, { type: "api_key", secret: "hubspot_key" })
    expect(put.status, put.text).toBe(200)
    expect(put.body).toMatchObject({ provider: "hubspot", type: "api_key", status: "missing_secret" })
    expect((await call("PUT", "/v1/secrets/hubspot_key", adminA, { value: "pat-na1-0000" })).status).toBe(204)
    const listed = await call("GET", "/v1/connections", adminA)
    expect(listed.body.find((c: any) => c.provider === "hubspot")).toMatchObject({ status: "connected" })

    const app = await call("PUT", "/v1/connections/gmail", adminA, {
      type: "oauth2",
      client_id: "app",
      client_secret_secret: "gmail_app_secret",
      authorize_url: "https://accounts.example.test/authorize",
      token_url: "https://accounts.example.test/token"
    })
    expect(app.status, app.text).toBe(200)
    expect(app.body.status).toBe("missing_secret")
    expect((await call("PUT", "/v1/secrets/gmail_app_secret", adminA, { value: "app-secret" })).status).toBe(204)
    const again = await call("GET", "/v1/connections", adminA)
    expect(again.body.find((c: any) => c.provider === "gmail")).toMatchObject({ status: "pending" })
    // tidy: these connections are not the other tests' business
    for (const provider of ["hubspot", "gmail"]) await call("DELETE", `/v1/connections/${provider}`, adminA)
  })
})

describe("custom tools", () => {
  it("accepts the seed's slack_notify as written and runs it in a task", async () => {
    const put = await call("PUT", "/v1/tools/slack_notify", adminA, slackNotify)
    expect(put.status).toBe(200)
    expect(put.body).toMatchObject({
      tool_id: "slack_notify",
      provider: "slack",
      builtin: false,
      side_effect: true,
      input_schema: {
        type: "object",
        properties: { channel_id: { type: "string" }, message: { type: "string" } },
        required: ["channel_id", "message"]
      }
    })
    received.length = 0
    const task = await call("POST", "/v1/tasks", memberA, {
      input: { steps: [{ id: "notify", tool: "slack_notify", input: { channel_id: "C42", message: "Deploy done" } }] }
    })
    expect(task.body.status, JSON.stringify(task.body)).toBe("succeeded")
    expect(task.body.output).toEqual({ ok: true, channel: "C42", ts: "1700000000.000100" })
    expect(received).toEqual([{
      method: "POST",
      path: "/api/chat.postMessage",
      authorization: "Bearer xoxb-tenant-a",
      body: { channel_id: "C42", message: "Deploy done" }
    }])
    expect(JSON.stringify(task.body)).not.toContain("xoxb-tenant-a")
  })

  it("lists and shows the tenant's tool beside the built-ins", async () => {
    const list = await call("GET", "/v1/tools", memberA)
    const ids = list.body.map((t: any) => t.tool_id)
    expect(ids).toEqual(expect.arrayContaining(["email.parse", "slack_notify"]))
    const one = await call("GET", "/v1/tools/slack_notify", memberA)
    expect(one.body.definition).toMatchObject({ endpoint: slackNotify.endpoint, auth: "oauth2" })
  })

  it("checks inputs against the tool's schema before any request", async () => {
    received.length = 0
    const task = await call("POST", "/v1/tasks", memberA, {
      input: { steps: [{ id: "n", tool: "slack_notify", input: { channel_id: 42, message: "hi" } }] }
    })
    // refused before it is accepted: nothing of it runs
    expect(task.status).toBe(400)
    expect(task.body.error).toMatchObject({
      code: "invalid_tool_input",
      details: { field: "input.steps.0.input.channel_id" }
    })
    expect(received).toEqual([])
  })

  it("checks a repeated input against the tool as it is now: a changed definition refuses what the old one took", async () => {
    const tool = (type: string) => ({
      tool_id: "strict_echo",
      name: "Strict echo",
      description: "POSTs n",
      parameters: [{ name: "n", type, required: true }],
      endpoint: `${slackBase}/echo`,
      method: "POST",
      auth: "none"
    })
    expect((await call("PUT", "/v1/tools/strict_echo", adminA, tool("string"))).status).toBe(200)
    const plan = { input: { steps: [{ id: "e", tool: "strict_echo", input: { n: "seven" } }] }, mode: "async" }
    // accepted, then accepted again (the second time from what the edge remembers of the first)
    expect((await call("POST", "/v1/tasks", adminA, plan)).status).toBe(202)
    expect((await call("POST", "/v1/tasks", adminA, plan)).status).toBe(202)
    expect((await call("PUT", "/v1/tools/strict_echo", adminA, tool("integer"))).status).toBe(200)
    // once the edge describes the tool again (its specs are fresh for 2 s), the same input meets the new schema
    await new Promise((r) => setTimeout(r, 2_100))
    const refused = await call("POST", "/v1/tasks", adminA, plan)
    expect(refused.status, JSON.stringify(refused.body)).toBe(400)
    expect(refused.body.error).toMatchObject({
      code: "invalid_tool_input",
      details: { field: "input.steps.0.input.n" }
    })
    expect((await call("DELETE", "/v1/tools/strict_echo", adminA)).status).toBe(204)
  })

  it.each([
    ["a bad tool id", { tool_id: "Bad Id" }, "tool_id"],
    ["an unsupported method", { method: "TRACE" }, "method"],
    ["an unknown auth type", { auth: "kerberos" }, "auth"],
    ["a non-http endpoint", { endpoint: "ftp://slack.com/x" }, "endpoint"],
    [
      "duplicate parameters",
      { parameters: [{ name: "a", type: "string" }, { name: "a", type: "number" }] },
      "parameters.1.name"
    ],
    ["a placeholder naming no parameter", { endpoint: "https://slack.com/api/{nope}" }, "endpoint"]
  ])("refuses %s with the field named", async (_, change, field) => {
    const body = { ...slackNotify, ...change }
    const res = await call("PUT", `/v1/tools/${encodeURIComponent(body.tool_id)}`, adminA, body)
    expect(res.status, JSON.stringify(res.body)).toBe(400)
    expect(res.body.error.details.field).toBe(field)
  })

  it("refuses a tenant tool that would shadow a built-in", async () => {
    const res = await call("PUT", "/v1/tools/email.parse", adminA, { ...slackNotify, tool_id: "email.parse" })
    expect(res.status).toBe(400)
    expect(res.body.error).toMatchObject({ code: "invalid_tool", details: { field: "tool_id" } })
  })

  it("lets only admins write", async () => {
    expect((await call("PUT", "/v1/tools/slack_notify", memberA, slackNotify)).status).toBe(403)
    expect((await call("DELETE", "/v1/tools/slack_notify", memberA)).status).toBe(403)
  })

  it("keeps tenants apart: B never sees, runs, reads or overwrites A's tool", async () => {
    const list = await call("GET", "/v1/tools", adminB)
    expect(list.body.map((t: any) => t.tool_id)).not.toContain("slack_notify")
    expect((await call("GET", "/v1/tools/slack_notify", adminB)).status).toBe(404)
    expect((await call("DELETE", "/v1/tools/slack_notify", adminB)).status).toBe(404)
    const run = await call("POST", "/v1/tasks", adminB, {
      input: { steps: [{ id: "n", tool: "slack_notify", input: { channel_id: "C1", message: "x" } }] }
    })
    expect(run.status).toBe(400)
    expect(run.body.error.code).toBe("unknown_tool")
    // B's own tool of the same id is B's alone
    expect((await call("PUT", "/v1/tools/slack_notify", adminB, { ...slackNotify, name: "B's version" })).status).toBe(
      200
    )
    expect((await call("GET", "/v1/tools/slack_notify", adminA)).body.spec.name).toBe("Send Slack Notification")
    expect((await call("GET", "/v1/tools/slack_notify", adminB)).body.spec.name).toBe("B's version")
    // B has no Slack connection: its run waits for B's own, and nothing reaches Slack with A's token
    received.length = 0
    const bRun = await call("POST", "/v1/tasks", adminB, {
      input: { steps: [{ id: "n", tool: "slack_notify", input: { channel_id: "C1", message: "x" } }] }
    })
    expect(bRun.status, bRun.text).toBe(202)
    expect(bRun.body.waiting_for).toEqual([
      expect.objectContaining({ kind: "connection", provider: "slack", reason: "missing" })
    ])
    expect((await call("POST", `/v1/tasks/${bRun.body.task_id}/cancel`, adminB)).status).toBe(200)
    expect(received).toEqual([])
  })

  it("serves a cacheable read from the cache, per tenant, and marks the hit", async () => {
    const weather = {
      tool_id: "weather",
      name: "Weather",
      description: "Current weather for a city",
      parameters: [{ name: "city", type: "string" }],
      endpoint: `${slackBase}/weather`,
      method: "GET",
      auth: "none",
      cacheable: true
    }
    // the tool's host is the loopback stand-in: allowed for A and B by their egress allowlists
    for (const token of [adminA, adminB]) {
      const put = await call("PUT", "/v1/tools/weather", token, weather)
      expect(put.body).toMatchObject({ provider: "custom", cacheable: true })
    }
    expect((await call("PUT", "/v1/settings", adminB, { egress_allowlist: [new URL(slackBase).host] })).status).toBe(
      200
    )
    const plan = (city: string) => ({ input: { steps: [{ id: "w", tool: "weather", input: { city } }] } })
    received.length = 0
    const first = await call("POST", "/v1/tasks", adminA, plan("Lyon"))
    const second = await call("POST", "/v1/tasks", adminA, plan("Lyon"))
    expect(first.body.steps[0]).toMatchObject({ status: "succeeded", cached: false })
    expect(second.body.steps[0]).toMatchObject({
      status: "succeeded",
      cached: true,
      output: first.body.steps[0].output
    })
    expect(received.map((r) => r.path)).toEqual(["/weather?city=Lyon"])
    // another input is another entry; another tenant never gets A's entry
    await call("POST", "/v1/tasks", adminA, plan("Paris"))
    const other = await call("POST", "/v1/tasks", adminB, plan("Lyon"))
    expect(other.body.steps[0]).toMatchObject({ status: "succeeded", cached: false })
    expect(received.map((r) => r.path)).toEqual(["/weather?city=Lyon", "/weather?city=Paris", "/weather?city=Lyon"])
  })

  it("never caches a tool with side effects", async () => {
    const post = (await call("GET", "/v1/tools/slack_notify", adminA)).body
    expect(post.spec.cacheable).toBe(false)
    const res = await call("PUT", "/v1/tools/writer", adminA, { ...slackNotify, tool_id: "writer", cacheable: true })
    expect(res.body.cacheable).toBe(false)
  })

  it("deletes the tenant's tool", async () => {
    expect((await call("DELETE", "/v1/tools/slack_notify", adminA)).status).toBe(204)
    expect((await call("GET", "/v1/tools/slack_notify", adminA)).status).toBe(404)
  })
})

describe("a tenant's credential and redirects", () => {
  // two origins: the tool's API, which redirects, and another server that must never see the key
  const seen: Array<{ origin: "api" | "other"; key: string | undefined }> = []
  let api: Server
  let other: Server
  const listen = async (server: Server) => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    return `http://127.0.0.1:${(server.address() as { port: number }).port}`
  }
  let otherBase = ""
  let apiBase = ""
  beforeAll(async () => {
    other = createServer((req, res) => {
      seen.push({ origin: "other", key: req.headers["x-acme-key"] as string | undefined })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ landed: true }))
    })
    api = createServer((req, res) => {
      seen.push({ origin: "api", key: req.headers["x-acme-key"] as string | undefined })
      res.writeHead(302, { location: `${otherBase}/landing` })
      res.end()
    })
    otherBase = await listen(other)
    apiBase = await listen(api)
  })
  afterAll(async () => {
    for (const server of [api, other]) {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })

  it("sends a custom credential header to the tool's API and never to the origin it redirects to", async () => {
    expect((await call("PUT", "/v1/secrets/acme_key", adminA, { value: "acme-secret-1" })).status).toBe(204)
    expect(
      (await call("PUT", "/v1/connections/acme", adminA, { type: "api_key", secret: "acme_key", header: "X-Acme-Key" }))
        .status
    ).toBe(200)
    expect(
      (await call("PUT", "/v1/tools/acme_read", adminA, {
        tool_id: "acme_read",
        name: "acme_read",
        parameters: [{ name: "q", type: "string" }],
        endpoint: `${apiBase}/read`,
        method: "GET",
        auth: "api_key",
        provider: "acme"
      })).status
    ).toBe(200)
    const task = await call("POST", "/v1/tasks", memberA, {
      input: { steps: [{ id: "s", tool: "acme_read", input: { q: "x" } }] }
    })
    expect(task.body.status, JSON.stringify(task.body)).toBe("succeeded")
    expect(task.body.output).toEqual({ landed: true })
    expect(seen).toEqual([{ origin: "api", key: "acme-secret-1" }, { origin: "other", key: undefined }])
  })
})

describe("fallback tools", () => {
  /** A loopback upstream whose paths answer with the status they name: /status/503, /status/400, /status/200. */
  let upstream: Server
  let upstreamBase = ""
  const hits: Array<string> = []
  beforeAll(async () => {
    upstream = createServer((req, res) => {
      hits.push(req.url!)
      const status = Number(/\/status\/(\d+)/.exec(req.url!)?.[1] ?? 200)
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify({ from: req.url!.split("?")[0], status }))
    })
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r))
    upstreamBase = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`
  })
  afterAll(async () => {
    upstream.closeAllConnections()
    await new Promise((r) => upstream.close(r))
  })

  const tool = (tool_id: string, path: string, fallback?: string) =>
    call("PUT", `/v1/tools/${tool_id}`, adminA, {
      tool_id,
      name: tool_id,
      parameters: [{ name: "q", type: "string" }],
      endpoint: `${upstreamBase}${path}`,
      method: "GET",
      auth: "none",
      ...(fallback ? { fallback } : {})
    })
  const runOne = (toolId: string) =>
    call("POST", "/v1/tasks", memberA, { input: { steps: [{ id: "s", tool: toolId, input: { q: "x" } }] } })

  it("answers from the fallback tool when the tool fails transiently, and says so on the step", async () => {
    expect((await tool("crm_backup", "/status/200/backup")).status).toBe(200)
    const put = await tool("crm_lookup", "/status/503/primary", "crm_backup")
    expect(put.body.fallback).toBe("crm_backup")
    hits.length = 0
    const task = await runOne("crm_lookup")
    expect(task.body.status, JSON.stringify(task.body)).toBe("succeeded")
    expect(task.body.output).toEqual({ from: "/status/200/backup", status: 200 })
    expect(task.body.steps[0]).toMatchObject({ tool: "crm_lookup", status: "succeeded", served_by: "crm_backup" })
    // the tool's own attempts first (a GET may be repeated), then its fallback
    expect(hits.map((h) => h.split("?")[0])).toEqual([
      "/status/503/primary",
      "/status/503/primary",
      "/status/503/primary",
      "/status/200/backup"
    ])
  })

  it("does not fall back from a client error: the request itself is wrong", async () => {
    expect((await tool("crm_strict", "/status/400/strict", "crm_backup")).status).toBe(200)
    hits.length = 0
    const task = await runOne("crm_strict")
    expect(task.body.status).toBe("failed")
    expect(task.body.steps[0].error).toMatchObject({ code: "tool_failed" })
    expect(task.body.steps[0].error.message).toContain("HTTP 400")
    expect(hits).toHaveLength(1)
  })

  it("gives no fallback outside the task's tool allowlist", async () => {
    const put = (tool_id: string, path: string, provider: string, fallback?: string) =>
      call("PUT", `/v1/tools/${tool_id}`, adminA, {
        tool_id,
        name: tool_id,
        parameters: [{ name: "q", type: "string" }],
        endpoint: `${upstreamBase}${path}`,
        method: "GET",
        auth: "none",
        provider,
        ...(fallback ? { fallback } : {})
      })
    expect((await put("al_backup", "/status/200/al-backup", "allowlisted-backup")).status).toBe(200)
    expect((await put("al_lookup", "/status/503/al-primary", "allowlisted", "al_backup")).status).toBe(200)
    hits.length = 0
    const restricted = await call("POST", "/v1/tasks", memberA, {
      input: { steps: [{ id: "s", tool: "al_lookup", input: { q: "x" } }] },
      tools: ["al_lookup"]
    })
    expect(restricted.body.status).toBe("failed")
    expect(hits.map((h) => h.split("?")[0])).not.toContain("/status/200/al-backup")
    // allowed: the fallback answers
    const open = await call("POST", "/v1/tasks", memberA, {
      input: { steps: [{ id: "s", tool: "al_lookup", input: { q: "x" } }] },
      tools: ["al_lookup", "al_backup"]
    })
    expect(open.body.steps[0]).toMatchObject({ status: "succeeded", served_by: "al_backup" })
  })

  it("ends a cycle of fallbacks after each tool was tried once", async () => {
    expect((await tool("ping_a", "/status/502/a", "ping_b")).status).toBe(200)
    expect((await tool("ping_b", "/status/503/b", "ping_a")).status).toBe(200)
    hits.length = 0
    const task = await runOne("ping_a")
    expect(task.body.status).toBe("failed")
    // both tools are the same provider's (this host): its breaker opens at the 5th consecutive failure
    expect(hits.map((h) => h.split("?")[0])).toEqual([
      ...Array(3).fill("/status/502/a"),
      ...Array(2).fill("/status/503/b")
    ])
    // the call that tripped the breaker reports its own last failure
    expect(task.body.steps[0].error).toMatchObject({ code: "tool_failed", details: { status: 503 } })
  })

  it("refuses a tool that is its own fallback, and keeps tenants' fallbacks apart", async () => {
    const self = await tool("loop", "/status/200/loop", "loop")
    expect(self.status).toBe(400)
    expect(self.body.error.details.field).toBe("fallback")
    // tenant B names A's backup as its fallback: B has no such tool, so B's failure stands
    const put = await call("PUT", "/v1/tools/b_lookup", adminB, {
      tool_id: "b_lookup",
      name: "b",
      parameters: [{ name: "q", type: "string" }],
      endpoint: `${upstreamBase}/status/503/b-primary`,
      method: "GET",
      auth: "none",
      fallback: "crm_backup"
    })
    expect(put.status).toBe(200)
    hits.length = 0
    const memberB = await edge.sign({ tenant_id: "tenant-b", role: "member" })
    const task = await call("POST", "/v1/tasks", memberB, {
      input: { steps: [{ id: "s", tool: "b_lookup", input: { q: "x" } }] }
    })
    expect(task.body.status).toBe("failed")
    expect(hits.map((h) => h.split("?")[0])).toEqual(Array(3).fill("/status/503/b-primary"))
  })
})
