import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as jose from "jose"
import { request } from "node:http"
import { audience, issuer, makeProbes, startEdge } from "./fixtures.js"

const maxBodyBytes = 64 * 1024

let base = ""
let edge: Awaited<ReturnType<typeof startEdge>>
const sign = (...args: Parameters<typeof edge.sign>) => edge.sign(...args)

let tokenA = ""
let tokenB = ""

const api = (path: string, init: RequestInit & { token?: string | null; json?: unknown } = {}) => {
  const headers = new Headers(init.headers)
  const token = init.token === undefined ? tokenA : init.token
  if (token !== null) headers.set("authorization", `Bearer ${token}`)
  if (init.json !== undefined) headers.set("content-type", "application/json")
  return fetch(`${base}${path}`, {
    ...init,
    headers,
    ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {})
  })
}

const email = "From: Ada <ada@example.com>\r\nTo: bob@example.com\r\nSubject: Launch review\r\n" +
  "Date: Tue, 05 Mar 2024 14:30:00 +0000\r\n\r\nSee you there."

const twoSteps = {
  steps: [
    { id: "parse", tool: "email.parse", input: { raw: email } },
    {
      id: "note",
      tool: "text.template",
      input: {
        template: "{{subject}} on {{date}}",
        variables: { subject: { $ref: "parse.output.subject" }, date: { $ref: "parse.output.date" } }
      }
    }
  ]
}

beforeAll(async () => {
  edge = await startEdge(makeProbes(), { maxBodyBytes })
  base = edge.base
  tokenA = await sign({ tenant_id: "tenant-a", role: "member" })
  tokenB = await sign({ tenant_id: "tenant-b", role: "admin" })
})

afterAll(() => edge.close())

describe("tasks over HTTP", () => {
  it("runs a two-step plan synchronously: 200 with both steps' outputs", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { input: twoSteps } })
    expect(res.status).toBe(200)
    const task = await res.json()
    expect(task.status).toBe("succeeded")
    expect(task.steps.map((s: any) => s.status)).toEqual(["succeeded", "succeeded"])
    expect(task.steps[0].output.subject).toBe("Launch review")
    expect(task.output).toEqual({ text: "Launch review on 2024-03-05T14:30:00.000Z" })
    expect(task.task_id.startsWith(`${task.session_id}.`)).toBe(true)
  })

  it("lists the tenant's tasks newest first, by session and status, a page at a time; never another tenant's", async () => {
    const lister = await sign({ tenant_id: "tenant-list", role: "member" })
    const submit = async (session: string, input: unknown) => {
      const res = await api("/v1/tasks", { method: "POST", token: lister, json: { session_id: session, input } })
      expect(res.status).toBe(200)
      return (await res.json()).task_id as string
    }
    const bad = { steps: [{ id: "x", tool: "json.extract", input: { json: { a: 1 }, path: "b" } }] }
    const a1 = await submit("sa", twoSteps)
    const b1 = await submit("sb", bad)
    const a2 = await submit("sa", twoSteps)
    const list = async (query: string, token = lister) => {
      const res = await api(`/v1/tasks${query}`, { token })
      return { status: res.status, body: await res.json() }
    }
    const all = await list("")
    expect(all.status).toBe(200)
    expect(all.body.tasks.map((t: any) => t.task_id)).toEqual([a2, b1, a1])
    expect(all.body.tasks[0]).toMatchObject({
      session_id: "sa",
      status: "succeeded",
      kind: "plan",
      step_count: 2,
      mode: "sync"
    })
    expect(all.body.tasks[1]).toMatchObject({ status: "failed", error: { code: expect.any(String) } })
    expect(all.body.next_cursor).toBeUndefined()
    expect((await list("?session_id=sa")).body.tasks.map((t: any) => t.task_id)).toEqual([a2, a1])
    expect((await list("?status=failed")).body.tasks.map((t: any) => t.task_id)).toEqual([b1])
    const first = await list("?limit=2")
    expect(first.body.tasks.map((t: any) => t.task_id)).toEqual([a2, b1])
    const second = await list(`?limit=2&cursor=${first.body.next_cursor}`)
    expect(second.body.tasks.map((t: any) => t.task_id)).toEqual([a1])
    // another tenant sees none of them; its own list is its own
    expect((await list("", tokenB)).body.tasks.map((t: any) => t.task_id)).not.toContain(a1)
    // bad queries: a clear 400 naming the field
    const wrongCursor = await list("?cursor=not-ours")
    expect(wrongCursor.status).toBe(400)
    expect(wrongCursor.body.error.details.field).toBe("cursor")
    expect((await list("?limit=0")).status).toBe(400)
    expect((await list("?status=done")).status).toBe(400)
  })

  it("answers 202 in async mode, then GET shows the task finished", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { input: twoSteps, mode: "async" } })
    expect(res.status).toBe(202)
    const accepted = await res.json()
    expect(["queued", "running"]).toContain(accepted.status)
    let task = accepted
    for (let i = 0; i < 100 && task.status !== "succeeded"; i++) {
      await new Promise((r) => setTimeout(r, 20))
      task = await (await api(`/v1/tasks/${accepted.task_id}`)).json()
    }
    expect(task.status).toBe("succeeded")
    expect(task.output).toEqual({ text: "Launch review on 2024-03-05T14:30:00.000Z" })
    const session = await (await api(`/v1/sessions/${accepted.session_id}`)).json()
    expect(session).toMatchObject({ session_id: accepted.session_id, task_ids: [accepted.task_id], message_count: 0 })
  })

  it("returns the same task for a repeated idempotency key", async () => {
    const body = { input: twoSteps, idempotency_key: "order-42" }
    const first = await (await api("/v1/tasks", { method: "POST", json: body })).json()
    const second = await (await api("/v1/tasks", { method: "POST", json: body })).json()
    expect(second.task_id).toBe(first.task_id)
    expect(second.created_at).toBe(first.created_at)
    const otherTenant = await (await api("/v1/tasks", { method: "POST", json: body, token: tokenB })).json()
    expect(otherTenant.task_id).not.toBe(first.task_id)
  })

  it("refuses to cancel a finished task with 409", async () => {
    const task = await (await api("/v1/tasks", { method: "POST", json: { input: twoSteps } })).json()
    const res = await api(`/v1/tasks/${task.task_id}/cancel`, { method: "POST" })
    expect(res.status).toBe(409)
    expect((await res.json()).error.code).toBe("task_finished")
  })

  it("answers natural-language input with llm_not_configured", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { input: "Book a meeting with Bob" } })
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatchObject({ code: "llm_not_configured", details: { field: "input" } })
  })
})

describe("authentication", () => {
  const expect401 = async (token: string | null, reason?: RegExp) => {
    const res = await api("/v1/tasks", { method: "POST", json: { input: twoSteps }, token })
    expect(res.status).toBe(401)
    expect(res.headers.get("www-authenticate")).toContain(`error="invalid_token"`)
    const body = await res.json()
    expect(body.error.code).toBe("invalid_token")
    if (reason) expect(body.error.message).toMatch(reason)
  }

  it("401 without a token", () => expect401(null, /missing/))
  it("401 for garbage", () => expect401("not.a.jwt"))
  it("401 for an expired token", async () =>
    expect401(await sign({ tenant_id: "tenant-a" }, { exp: Math.floor(Date.now() / 1000) - 120 }), /expired/))
  it("401 for the wrong issuer", async () =>
    expect401(await sign({ tenant_id: "tenant-a" }, { iss: "https://evil.test" }), /iss/))
  it("401 for the wrong audience", async () =>
    expect401(await sign({ tenant_id: "tenant-a" }, { aud: "someone-else" }), /aud/))
  it("401 for a token signed by another key", async () => {
    const other = await jose.generateKeyPair("ES256")
    await expect401(await sign({ tenant_id: "tenant-a" }, { key: other.privateKey }), /signature/)
  })
  it("401 for alg: none", async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
    const now = Math.floor(Date.now() / 1000)
    await expect401(
      `${enc({ alg: "none", typ: "JWT" })}.${
        enc({ tenant_id: "tenant-a", sub: "x", iss: issuer, aud: audience, exp: now + 600 })
      }.`
    )
  })
  it("401 for HS256 signed with the public key as the secret", async () => {
    const token = await new jose.SignJWT({ tenant_id: "tenant-a", sub: "x" })
      .setProtectedHeader({ alg: "HS256" })
      .setIssuer(issuer)
      .setAudience(audience)
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(edge.publicPem))
    await expect401(token, /algorithm/)
  })
  it("401 for a token without tenant_id", async () => expect401(await sign({}), /tenant_id/))
  it("401 for an oversized token", () => expect401("a".repeat(10_000), /too long/))
  it("431 with the error envelope for a 100 KiB token, refused before any handler", async () => {
    const res = await fetch(`${edge.base}/v1/tasks/x.y`, {
      headers: { authorization: `Bearer ${"a".repeat(100 * 1024)}` }
    })
    expect(res.status).toBe(431)
    expect(await res.json()).toEqual({
      error: { code: "headers_too_large", message: expect.stringContaining("16 KiB") }
    })
  })
})

describe("bad input", () => {
  const post = (body: string) =>
    api("/v1/tasks", { method: "POST", body, headers: { "content-type": "application/json" } })

  it("400 naming the field for a missing input", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { mode: "sync" } })
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatchObject({ code: "invalid_request", details: { field: "input" } })
  })

  it("400 naming the field for a wrong type", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { input: twoSteps, timeout_ms: "soon" } })
    expect(res.status).toBe(400)
    const { error } = await res.json()
    expect(error.details.field).toBe("timeout_ms")
    expect(error.message).toContain("timeout_ms")
  })

  it("400 naming the deepest field inside a plan", async () => {
    const res = await api("/v1/tasks", {
      method: "POST",
      json: { input: { steps: [{ id: "bad id", tool: "email.parse" }] } }
    })
    expect(res.status).toBe(400)
    expect((await res.json()).error.details.field).toBe("input.steps.0.id")
  })

  it("400 for malformed JSON", async () => {
    const res = await post(`{"input": `)
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatchObject({ code: "invalid_request", details: { field: "body" } })
  })

  it("400 for a plan with a cycle, before anything runs", async () => {
    const res = await api("/v1/tasks", {
      method: "POST",
      json: {
        input: {
          steps: [{ id: "a", tool: "email.parse", depends_on: ["b"] }, {
            id: "b",
            tool: "email.parse",
            depends_on: ["a"]
          }]
        }
      }
    })
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatchObject({ code: "invalid_plan" })
  })

  it("413 for a body over the limit (Content-Length)", async () => {
    const res = await post(JSON.stringify({ input: "x".repeat(maxBodyBytes) }))
    expect(res.status).toBe(413)
    expect((await res.json()).error.code).toBe("payload_too_large")
  })

  it("413 for a chunked body over the limit", async () => {
    // node:http reports the answer even while the request is still being written
    const { port } = new URL(base)
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/tasks",
        headers: {
          authorization: `Bearer ${tokenA}`,
          "content-type": "application/json",
          "transfer-encoding": "chunked"
        }
      }, (res) => {
        res.resume()
        resolve(res.statusCode!)
      })
      req.on(
        "error",
        (e) => (e as NodeJS.ErrnoException).code === "ECONNRESET" || e.message.includes("EPIPE") ? undefined : reject(e)
      )
      req.write(`{"input": "`)
      const chunk = "x".repeat(16 * 1024)
      let sent = 0
      const pump = () => {
        if (req.destroyed || sent++ > 64) return req.end(`"}`)
        req.write(chunk, () => setImmediate(pump))
      }
      pump()
    })
    expect(status).toBe(413)
  })

  it("accepts a chunked body under the limit", async () => {
    const body = new TextEncoder().encode(JSON.stringify({ input: twoSteps }))
    const res = await fetch(`${base}/v1/tasks`, {
      method: "POST",
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(body.slice(0, 100))
          controller.enqueue(body.slice(100))
          controller.close()
        }
      }),
      duplex: "half",
      headers: { authorization: `Bearer ${tokenA}`, "content-type": "application/json" }
    } as RequestInit)
    expect(res.status).toBe(200)
    expect((await res.json()).status).toBe("succeeded")
  })

  it("400 naming task_id for a malformed task id", async () => {
    const res = await api("/v1/tasks/not-a-task-id")
    expect(res.status).toBe(400)
    expect((await res.json()).error).toMatchObject({ code: "invalid_request", details: { field: "task_id" } })
  })

  it("JSON 404 for an unknown route", async () => {
    const res = await api("/v1/nope")
    expect(res.status).toBe(404)
    expect((await res.json()).error.code).toBe("not_found")
  })

  it("an unknown top-level field of a task is named in the 400", async () => {
    const res = await api("/v1/tasks", { method: "POST", json: { inputs: "hello", input: "hi" } })
    expect(res.status).toBe(400)
    const { error } = await res.json()
    expect(error).toMatchObject({ code: "invalid_request", details: { field: "inputs" } })
    expect(error.message).toContain("inputs")
  })

  it("415 for a body that is not JSON (a form post, plain text), naming the type the API takes", async () => {
    for (const type of ["application/x-www-form-urlencoded", "text/plain;charset=UTF-8"]) {
      const res = await api("/v1/tasks", { method: "POST", body: "input=hello", headers: { "content-type": type } })
      expect(res.status, type).toBe(415)
      expect((await res.json()).error).toMatchObject({
        code: "unsupported_media_type",
        message: expect.stringContaining("application/json"),
        details: { expected: "application/json" }
      })
    }
    // JSON with a charset, or a +json type, is JSON
    const ok = await api("/v1/tasks", {
      method: "POST",
      body: JSON.stringify({ input: { steps: [{ id: "parse", tool: "email.parse", input: { raw: email } }] } }),
      headers: { "content-type": "application/json; charset=utf-8" }
    })
    expect(ok.status).toBe(200)
  })

  it("405 with Allow for a known path asked with another method", async () => {
    const res = await api("/v1/tasks", { method: "DELETE" })
    expect(res.status).toBe(405)
    expect(res.headers.get("allow")).toBe("GET, POST")
    expect((await res.json()).error).toMatchObject({
      code: "method_not_allowed",
      details: { allow: ["GET", "POST"] }
    })
    const task = await api("/v1/tasks/s1.t1", { method: "DELETE" })
    expect(task.status).toBe(405)
    expect(task.headers.get("allow")).toBe("GET")
    const cancel = await api("/v1/tasks/s1.t1/cancel", { method: "GET" })
    expect(cancel.headers.get("allow")).toBe("POST")
    // a path no route has is still 404, whatever the method
    expect((await api("/v1/tasks/s1.t1/nope", { method: "POST" })).status).toBe(404)
  })
})

describe("tenant isolation", () => {
  it("tenant B gets 404 for tenant A's task, its cancel and its session", async () => {
    const task = await (await api("/v1/tasks", { method: "POST", json: { input: twoSteps, mode: "async" } })).json()
    for (
      const [path, method] of [
        [`/v1/tasks/${task.task_id}`, "GET"],
        [`/v1/tasks/${task.task_id}/cancel`, "POST"],
        [`/v1/sessions/${task.session_id}`, "GET"]
      ] as const
    ) {
      const res = await api(path, { method, token: tokenB })
      expect(res.status, `${method} ${path}`).toBe(404)
      expect((await res.json()).error.code).toBe("not_found")
    }
    // and A still sees it
    expect((await api(`/v1/tasks/${task.task_id}`)).status).toBe(200)
  })

  it("a session id chosen by tenant B never reaches tenant A's session", async () => {
    const a = await (await api("/v1/tasks", { method: "POST", json: { input: twoSteps, session_id: "shared-name" } }))
      .json()
    const b = await (await api("/v1/tasks", {
      method: "POST",
      json: { input: twoSteps, session_id: "shared-name" },
      token: tokenB
    })).json()
    const sessionA = await (await api("/v1/sessions/shared-name")).json()
    const sessionB = await (await api("/v1/sessions/shared-name", { token: tokenB })).json()
    expect(sessionA.task_ids).toEqual([a.task_id])
    expect(sessionB.task_ids).toEqual([b.task_id])
  })
})

describe("operations", () => {
  it("serves health, readiness, OpenAPI and docs without a token", async () => {
    expect(await (await api("/healthz", { token: null })).json()).toEqual({ status: "ok" })
    expect(await (await api("/readyz", { token: null })).json()).toEqual({ status: "ok", checks: { cluster: "ok" } })
    const spec = await (await api("/openapi.json", { token: null })).json()
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining([
      "/v1/tasks",
      "/v1/tasks/{task_id}",
      "/v1/tasks/{task_id}/steps/{step_id}/approve",
      "/v1/tasks/{task_id}/steps/{step_id}/reject",
      "/v1/approvals",
      "/healthz"
    ]))
    // the statuses of a task that waits are in the contract
    expect(JSON.stringify(spec)).toContain("waiting_approval")
    const docs = await api("/docs", { token: null })
    expect(docs.status).toBe(200)
    expect(docs.headers.get("content-type")).toContain("text/html")
  })
})
