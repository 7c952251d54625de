import type { AuditRecord } from "@altan/audit/AuditLog"
import { verify } from "@altan/audit/Verify"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createServer, type Server } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * The audit trail of real requests: configuration changes, a natural-language task with one LLM turn
 * asking for two tool calls, refusals. Records come in order, carry no secret, and form a hash chain
 * whose tampering `verify` points at.
 */
const secrets = { llmKey: "sk-audit-llm-3f9a", crmKey: "crm-audit-key-77b1" }
let edge: Awaited<ReturnType<typeof startEdge>>
let llm: Awaited<ReturnType<typeof startFakeOpenAi>>
let crm: Server
let admin = ""
let member = ""
const tenant = "audit-tenant"

const call = (method: string, path: string, body?: unknown, token = admin) => edge.call(method, path, token, body)
const ofTenant = () => edge.audit().filter((r) => r.tenant_id === tenant)

beforeAll(async () => {
  llm = await startFakeOpenAi()
  crm = createServer((req, res) => {
    req.resume().on("end", () => {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ id: req.url }))
    })
  })
  await new Promise<void>((r) => crm.listen(0, "127.0.0.1", r))
  edge = await startEdge(makeProbes())
  admin = await edge.sign({ tenant_id: tenant, role: "admin", sub: "alice" })
  member = await edge.sign({ tenant_id: tenant, role: "member", sub: "bob" })
})

afterAll(async () => {
  await edge.close()
  await llm.close()
  crm.closeAllConnections()
  await new Promise((r) => crm.close(r))
})

describe("audit log", () => {
  it("records configuration changes, never their values, one after another", async () => {
    const crmBase = `http://127.0.0.1:${(crm.address() as { port: number }).port}`
    expect((await call("PUT", "/v1/secrets/llm_key", { value: secrets.llmKey })).status).toBe(204)
    expect((await call("PUT", "/v1/secrets/crm_key", { value: secrets.crmKey })).status).toBe(204)
    expect(
      (await call("PUT", "/v1/llms/main", {
        llm_id: "main",
        endpoint: llm.url,
        auth: { type: "api_key", key: "llm_key" }
      }))
        .status
    ).toBe(200)
    expect((await call("PUT", "/v1/settings", { default_llm: "main" })).status).toBe(200)
    expect((await call("PUT", "/v1/connections/crm", { type: "api_key", secret: "crm_key", prefix: "Key " })).status)
      .toBe(200)
    for (const id of ["crm_lookup", "crm_note"]) {
      expect(
        (await call("PUT", `/v1/tools/${id}`, {
          tool_id: id,
          name: id,
          parameters: [{ name: "q", type: "string" }],
          endpoint: `${crmBase}/${id}`,
          method: "GET",
          auth: "api_key",
          provider: "crm"
        })).status
      ).toBe(200)
    }
    // refused: wrong role, and a write that fails validation
    expect((await call("DELETE", "/v1/secrets/llm_key", undefined, member)).status).toBe(403)
    expect((await call("PUT", "/v1/settings", { default_llm: "nope" })).status).toBe(400)

    const records = ofTenant()
    expect(records.map((r) => `${r.action} ${r.target} ${r.outcome}`)).toEqual([
      "config.change secret:llm_key ok",
      "config.change secret:crm_key ok",
      "config.change llm:main ok",
      "config.change settings ok",
      "config.change connection:crm ok",
      "config.change tool:crm_lookup ok",
      "config.change tool:crm_note ok",
      "authz.failure secret:llm_key denied",
      "config.change settings failed"
    ])
    expect(records[0]).toMatchObject({ user: "alice", details: { method: "PUT", status: 204 } })
    expect(records[7]).toMatchObject({ user: "bob" })
  })

  it("records a task with an LLM turn and two tool calls in order", async () => {
    const before = ofTenant().length
    llm.script(
      {
        kind: "tools",
        calls: [
          { name: "crm_lookup", arguments: JSON.stringify({ q: "acme" }) },
          { name: "crm_note", arguments: JSON.stringify({ q: "called" }) }
        ]
      },
      { kind: "answer", content: "Looked up and noted." }
    )
    const task = await call("POST", "/v1/tasks", { input: "Look up Acme and note it", timeout_ms: 20_000 }, member)
    expect(task.body.status, task.text).toBe("succeeded")

    const records = ofTenant().slice(before)
    const lines = records.map((r) => `${r.action} ${r.target}`)
    expect(lines[0]).toBe(`task.accepted task:${task.body.task_id}`)
    expect(lines[1]).toBe("llm.call llm:main")
    // the two calls run in parallel: each one's request comes before its invocation record
    const middle = lines.slice(2, 6)
    expect([...middle].sort()).toEqual([
      `http.request http://127.0.0.1:${(crm.address() as { port: number }).port}/crm_lookup`,
      `http.request http://127.0.0.1:${(crm.address() as { port: number }).port}/crm_note`,
      "tool.invoke tool:crm_lookup",
      "tool.invoke tool:crm_note"
    ])
    for (const id of ["crm_lookup", "crm_note"]) {
      expect(middle.findIndex((l) => l.endsWith(`/${id}`))).toBeLessThan(middle.indexOf(`tool.invoke tool:${id}`))
    }
    expect(lines.slice(6)).toEqual(["llm.call llm:main", `task.finished task:${task.body.task_id}`])
    expect(records[0]).toMatchObject({ user: "bob", outcome: "ok" })
    expect(records.at(-1)).toMatchObject({ outcome: "ok", details: { status: "succeeded" } })
    expect(records.at(-1)!.latency_ms).toBeGreaterThanOrEqual(0)
    const invoke = records.find((r) => r.action === "tool.invoke")!
    expect(invoke.details).toMatchObject({ provider: "crm", task_id: task.body.task_id, attempts: 1 })
    // every record of the run carries the trace it was written in, and the whole log still verifies
    for (const r of records) expect(r.trace_id, `${r.action} ${r.target}`).toMatch(/^[0-9a-f]{32}$/)
    expect(verify(edge.audit()).ok).toBe(true)

    // no record holds a secret, a credential header or a query string
    const text = JSON.stringify(edge.audit())
    for (const value of Object.values(secrets)) expect(text).not.toContain(value)
    expect(text).not.toContain("Key crm-")
  })

  it("records refused tokens under no tenant", async () => {
    const res = await edge.call("GET", "/v1/tasks/x.y", "not-a-token")
    expect(res.status).toBe(401)
    const refused = edge.audit().filter((r) => r.action === "auth.failure").at(-1)!
    expect(refused).toMatchObject({ tenant_id: "-", outcome: "denied", target: "GET /v1/tasks/x.y" })
    expect(JSON.stringify(refused)).not.toContain("not-a-token")
  })

  it("verifies the chain, and names the record that was altered", async () => {
    const records = edge.audit().map((r) => JSON.parse(JSON.stringify(r)) as AuditRecord)
    const good = verify(records)
    expect(good.ok).toBe(true)
    expect(good.breaks).toEqual([])
    const mine = records.filter((r) => r.tenant_id === tenant)
    const target = mine[3]!
    const altered = records.map((r) => (r === target ? { ...r, outcome: r.outcome === "ok" ? "failed" : "ok" } : r))
    const bad = verify(altered)
    expect(bad.ok).toBe(false)
    expect(bad.breaks).toEqual([
      expect.objectContaining({ chain: target.chain, seq: target.seq, reason: "hash mismatch" })
    ])
  })
})
