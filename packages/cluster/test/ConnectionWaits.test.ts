import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createServer, type Server } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { capturingTracer, ended, makeProbes, sleep, startEdge } from "./fixtures.js"

// A call whose tenant has no usable connection to its provider waits for one (`waiting_connection`), over the public
// API: it goes on by itself once an admin stores the API key, another tenant's connection wakes nothing, a cancel ends
// the wait, and `connection_timeout` bounds it. (The OAuth2 consent that resumes a wait is in `OAuth.test.ts`, against
// a real OAuth2 server.)

/** A loopback API per provider (`/<provider>/notes`) that records what reaches it. */
const received: Array<{ provider: string; authorization?: string | undefined; body: any }> = []
let notes: Server
let notesBase = ""
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let member = ""
let otherAdmin = ""
let timeoutAdmin = ""

/** The name and attributes of every span the runtime starts: which entity looked at what, for whom. */
const { spans, tracer } = capturingTracer()
/** `Connection.ready` asked of a tenant's connection to `provider`: a waiting call looking again. */
const readyChecks = (tenant: string, provider: string) =>
  spans.filter((s) =>
    s.name === "Connection.ready" && s.attributes.get("altan.tenant_id") === tenant &&
    s.attributes.get("altan.provider") === provider
  ).length
const reached = (provider: string) => received.filter((r) => r.provider === provider)

/** A tenant tool that calls `provider`'s API with the tenant's API key for it. */
const notesTool = (provider: string) => ({
  tool_id: `${provider}_add`,
  name: `Add a ${provider} note`,
  parameters: [{ name: "text", type: "string" }],
  endpoint: `${notesBase}/${provider}/notes`,
  method: "POST",
  auth: "api_key",
  provider
})

const get = async (taskId: string, token = member) => (await edge.call("GET", `/v1/tasks/${taskId}`, token)).body

beforeAll(async () => {
  notes = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      received.push({
        provider: req.url!.split("/")[1]!,
        authorization: req.headers.authorization,
        body: JSON.parse(Buffer.concat(chunks).toString() || "null")
      })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ ok: true }))
    })
  })
  await new Promise<void>((r) => notes.listen(0, "127.0.0.1", r))
  notesBase = `http://127.0.0.1:${(notes.address() as { port: number }).port}`
  fake = await startFakeOpenAi()
  edge = await startEdge(makeProbes(), { tracer })
  admin = await edge.sign({ tenant_id: "cw", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "cw", role: "member", sub: "ana" })
  otherAdmin = await edge.sign({ tenant_id: "cw-other", role: "admin", sub: "eve" })
  timeoutAdmin = await edge.sign({ tenant_id: "cw-timeout", role: "admin", sub: "tim" })
  for (const provider of ["notes", "notes2", "notes4"]) {
    const put = await edge.call("PUT", `/v1/tools/${provider}_add`, admin, notesTool(provider))
    expect(put.status, put.text).toBe(200)
  }
  for (const provider of ["notes2"]) {
    expect((await edge.call("PUT", `/v1/tools/${provider}_add`, otherAdmin, notesTool(provider))).status).toBe(200)
  }
  expect((await edge.call("PUT", "/v1/tools/notes3_add", timeoutAdmin, notesTool("notes3"))).status).toBe(200)
  expect((await edge.call("PUT", "/v1/secrets/llm_key", admin, { value: "sk-waits" })).status).toBe(204)
  const llm = await edge.call("PUT", "/v1/llms/main", admin, {
    llm_id: "main",
    endpoint: fake.url,
    auth: { type: "api_key", key: "llm_key" }
  })
  expect(llm.status, llm.text).toBe(200)
  expect((await edge.call("PUT", "/v1/settings", admin, { default_llm: "main" })).status).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await fake.close()
  notes.closeAllConnections()
  await new Promise((r) => notes.close(r))
})

describe("a call waiting for its connection", () => {
  it("waits for a missing API key without failing its task, and goes on once an admin stores it", async () => {
    const submitted = await edge.call("POST", "/v1/tasks", member, {
      input: {
        steps: [
          { id: "read", tool: "probe.echo", input: { value: "independent" } },
          { id: "write", tool: "notes_add", input: { text: "hello" } },
          { id: "after", tool: "probe.echo", input: { value: { $ref: "write.output.ok" } }, depends_on: ["write"] }
        ]
      }
    })
    // a sync request that reaches the wait answers 202 with the waiting task
    expect(submitted.status, submitted.text).toBe(202)
    const task = submitted.body
    expect(task.status).toBe("waiting")
    expect(task.steps.map((s: any) => [s.id, s.status])).toEqual([
      ["read", "succeeded"],
      ["write", "waiting_connection"],
      ["after", "pending"]
    ])
    // no OAuth2 app to consent with: no link, only what is missing
    expect(task.waiting_for).toEqual([{
      step_id: "write",
      kind: "connection",
      tool: "notes_add",
      provider: "notes",
      reason: "missing",
      expires_at: expect.any(String)
    }])
    // the tenant set no connection_timeout: a day
    const wait = task.steps[1].connection
    expect(Date.parse(wait.expires_at) - Date.parse(wait.requested_at)).toBe(86_400_000)
    expect(reached("notes")).toHaveLength(0)
    const listed = await edge.call("GET", "/v1/tasks?status=waiting", member)
    expect(listed.body.tasks.map((t: any) => t.task_id)).toContain(task.task_id)

    // a connection whose key is not stored yet is not one: the task still waits
    const connection = await edge.call("PUT", "/v1/connections/notes", admin, {
      type: "api_key",
      secret: "notes_key",
      prefix: "Bearer "
    })
    expect(connection.body.status).toBe("missing_secret")
    await sleep(300)
    expect((await get(task.task_id)).status).toBe("waiting")

    // the key is stored: the task goes on by itself, the call made once with it
    expect((await edge.call("PUT", "/v1/secrets/notes_key", admin, { value: "nk-7c1e" })).status).toBe(204)
    const done = await edge.until(task.task_id, member, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(done.output).toMatchObject({ value: true })
    expect(done.waiting_for).toBeUndefined()
    expect(done.steps[1]).toMatchObject({
      status: "succeeded",
      attempts: 2,
      connection: { provider: "notes", reason: "missing" }
    })
    expect(reached("notes")).toEqual([{ provider: "notes", authorization: "Bearer nk-7c1e", body: { text: "hello" } }])
    // woken, the call looked at the connection before calling (what the isolation test below counts)
    expect(readyChecks("cw", "notes")).toBeGreaterThan(0)
    const events = await edge.events(task.task_id, member)
    const types = events.map((e) => e.type)
    expect(types.indexOf("connection.required")).toBeGreaterThan(-1)
    expect(types.indexOf("connection.required")).toBeLessThan(types.indexOf("task.waiting"))
    expect(types.at(-1)).toBe("task.succeeded")
    expect(events.find((e) => e.type === "connection.required").data).toEqual({
      step_id: "write",
      tool: "notes_add",
      provider: "notes",
      reason: "missing",
      expires_at: wait.expires_at
    })
    // the key never shows in what the API answers
    expect(JSON.stringify(done)).not.toContain("nk-7c1e")
  })

  it("in a natural-language task, the model gets the call's result once the connection is there", async () => {
    fake.script(
      { kind: "tools", calls: [{ name: "notes4_add", arguments: `{"text": "from the model"}` }] },
      { kind: "answer", content: "noted" }
    )
    const task = (await edge.call("POST", "/v1/tasks", member, { input: "note it", tools: ["notes4_add"] })).body
    expect(task.status, JSON.stringify(task)).toBe("waiting")
    expect(task.waiting_for).toEqual([
      expect.objectContaining({ step_id: "1.1", kind: "connection", reason: "missing" })
    ])
    expect(fake.received).toHaveLength(1)
    expect((await edge.call("PUT", "/v1/secrets/notes4_key", admin, { value: "nk-4" })).status).toBe(204)
    const connected = await edge.call("PUT", "/v1/connections/notes4", admin, { type: "api_key", secret: "notes4_key" })
    expect(connected.body.status).toBe("connected")
    const done = await edge.until(task.task_id, member, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(done.output).toBe("noted")
    expect(reached("notes4")).toEqual([{ provider: "notes4", authorization: "nk-4", body: { text: "from the model" } }])
    // asked again only once the call had its result, which went back under the call's id
    expect(fake.received).toHaveLength(2)
    const toolMessage = fake.received[1]!.body.messages.find((m: any) => m.role === "tool")
    expect(JSON.parse(toolMessage.content)).toMatchObject({ output: { ok: true } })
  })

  it("another tenant's connection wakes nothing; a cancel ends the wait and nothing runs after", async () => {
    const task = (await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "w", tool: "notes2_add", input: { text: "mine" } }] },
      mode: "async"
    })).body
    await edge.until(task.task_id, member, (t) => t.status === "waiting")
    const looked = readyChecks("cw", "notes2")
    // the other tenant connects a provider of the same name: its own connection, not this tenant's
    expect((await edge.call("PUT", "/v1/secrets/notes2_key", otherAdmin, { value: "other-key" })).status).toBe(204)
    const theirs = await edge.call("PUT", "/v1/connections/notes2", otherAdmin, {
      type: "api_key",
      secret: "notes2_key"
    })
    expect(theirs.body.status).toBe("connected")
    await sleep(500)
    expect((await get(task.task_id)).status).toBe("waiting")
    expect(reached("notes2")).toHaveLength(0)
    // not even woken: a wake would have made the call look at this tenant's connection again
    expect(readyChecks("cw", "notes2")).toBe(looked)
    // nor can the other tenant see or cancel it
    expect((await edge.call("POST", `/v1/tasks/${task.task_id}/cancel`, otherAdmin)).status).toBe(404)

    const cancelled = await edge.call("POST", `/v1/tasks/${task.task_id}/cancel`, member)
    expect(cancelled.status, cancelled.text).toBe(200)
    expect(cancelled.body.status).toBe("cancelled")
    expect(cancelled.body.steps[0].status).toBe("cancelled")
    expect(cancelled.body.waiting_for).toBeUndefined()
    // connected afterwards: the cancelled task stays so
    expect((await edge.call("PUT", "/v1/secrets/notes2_key", admin, { value: "mine-key" })).status).toBe(204)
    expect((await edge.call("PUT", "/v1/connections/notes2", admin, { type: "api_key", secret: "notes2_key" })).status)
      .toBe(200)
    await sleep(500)
    expect((await get(task.task_id)).status).toBe("cancelled")
    expect(reached("notes2")).toHaveLength(0)
  })

  it("connection_timeout ends the wait: the task fails with connection_required; 0 fails it at once", async () => {
    expect((await edge.call("PUT", "/v1/settings", timeoutAdmin, { connection_timeout: 1 })).status).toBe(200)
    const plan = { input: { steps: [{ id: "w", tool: "notes3_add", input: { text: "late" } }] } }
    const waiting = await edge.call("POST", "/v1/tasks", timeoutAdmin, plan)
    expect(waiting.status, waiting.text).toBe(202)
    const wait = waiting.body.steps[0].connection
    expect(Date.parse(wait.expires_at) - Date.parse(wait.requested_at)).toBe(1000)
    const expired = await edge.until(waiting.body.task_id, timeoutAdmin, ended)
    expect(expired.status).toBe("failed")
    expect(expired.error).toMatchObject({
      code: "connection_required",
      details: { step_id: "w", provider: "notes3", reason: "missing" }
    })
    expect(expired.error.message).toContain("notes3")
    expect(expired.steps[0]).toMatchObject({ status: "failed", error: { code: "connection_required" } })
    expect(expired.waiting_for).toBeUndefined()

    expect((await edge.call("PUT", "/v1/settings", timeoutAdmin, { connection_timeout: 0 })).status).toBe(200)
    const failed = await edge.call("POST", "/v1/tasks", timeoutAdmin, plan)
    expect(failed.status, failed.text).toBe(200)
    expect(failed.body.status).toBe("failed")
    expect(failed.body.error.code).toBe("connection_required")
    expect(failed.body.steps[0].error).toMatchObject({
      code: "connection_required",
      details: { provider: "notes3", reason: "missing" }
    })
    expect(failed.body.steps[0].error.message).toContain("PUT /v1/connections/notes3")
    expect(reached("notes3")).toHaveLength(0)
    // a setting outside 0..30 days is refused
    const bad = await edge.call("PUT", "/v1/settings", timeoutAdmin, { connection_timeout: -1 })
    expect(bad.status).toBe(400)
  })
})
