import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import { EventEmitter } from "node:events"
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * Retries, Retry-After, idempotency and the circuit breaker of the Connection actor, end to end: tasks
 * through the public API against loopback upstreams that count and timestamp every request they receive.
 * Each test's tools name their own provider, so one test's failures never open another test's breaker.
 */

/** One scripted answer of the upstream: a status (after an optional delay), or no answer at all. */
type Reply = {
  readonly status: number
  readonly headers?: Record<string, string>
  readonly body?: unknown
  readonly delayMs?: number
} | "hang"

interface Request {
  readonly path: string
  readonly method: string
  /** `performance.now()` when the whole request had arrived. */
  readonly at: number
  readonly headers: IncomingHttpHeaders
  readonly body: unknown
}

/** A loopback upstream: each path answers from its own script (the last reply repeats), and records what came. */
const startUpstream = async () => {
  const received: Array<Request> = []
  const arrivals = new EventEmitter()
  const scripts = new Map<string, Array<Reply>>()
  const open = new Set<ServerResponse>()
  const server: Server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      const path = new URL(req.url!, "http://upstream").pathname
      const text = Buffer.concat(chunks).toString()
      received.push({
        path,
        method: req.method!,
        at: performance.now(),
        headers: req.headers,
        body: text ? JSON.parse(text) : undefined
      })
      arrivals.emit(path)
      const script = scripts.get(path) ?? []
      const reply = script.length > 1 ? script.shift()! : script[0] ?? { status: 200 }
      open.add(res)
      res.on("close", () => open.delete(res))
      if (reply === "hang") return
      setTimeout(() => {
        res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers })
        res.end(JSON.stringify(reply.body ?? { path, status: reply.status }))
      }, reply.delayMs ?? 0)
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    base: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    received,
    /** The requests that reached `path`. */
    at: (path: string) => received.filter((r) => r.path === path),
    /** Resolves once a request has reached `path` (at once if one has). */
    reached: (path: string) =>
      received.some((r) => r.path === path)
        ? Promise.resolve()
        : new Promise<void>((resolve) => arrivals.once(path, () => resolve())),
    /** Replaces the script of `path`. */
    script: (path: string, ...replies: Array<Reply>) => void scripts.set(path, replies),
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of open) res.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

const cooldownMs = 1_500
let upstream: Awaited<ReturnType<typeof startUpstream>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""

const call = (method: string, path: string, body?: unknown, token = admin) => edge.call(method, path, token, body)

/** Registers a tenant tool at `path` of the upstream; `provider` keeps its breaker its own. */
const putTool = async (tool_id: string, provider: string, path: string, extra: Record<string, unknown> = {}) => {
  const res = await call("PUT", `/v1/tools/${tool_id}`, {
    tool_id,
    name: tool_id,
    parameters: [{ name: "q", type: "string" }],
    endpoint: `${upstream.base}${path}`,
    method: "GET",
    auth: "none",
    provider,
    ...extra
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body
}

/** A sync structured task of one step per `[step id, tool]`; answers the finished task. */
const runSteps = async (...steps: Array<[string, string]>) => {
  const res = await call("POST", "/v1/tasks", {
    input: { steps: steps.map(([id, tool]) => ({ id, tool, input: { q: id } })) }
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body
}
const runOne = async (tool: string) => {
  const task = await runSteps(["s", tool])
  return { task, step: task.steps[0] }
}

beforeAll(async () => {
  upstream = await startUpstream()
  edge = await startEdge(makeProbes(), {
    // the policy of production, with a threshold and cooldown a test can wait out
    resilience: { breakerThreshold: 3, breakerCooldown: Duration.millis(cooldownMs) },
    // one request per LLM turn, so a failing turn is one failure of the LLM's connection
    llm: { maxAttempts: 1, timeout: Duration.seconds(2), baseDelay: Duration.millis(20) }
  })
  admin = await edge.sign({ tenant_id: "resilient", role: "admin" })
})

afterAll(async () => {
  await edge.close()
  await upstream.close()
})

beforeEach(() => {
  upstream.received.length = 0
})

describe("retries", () => {
  it("retries a 503 twice, then succeeds, and records the attempts and the last error", async () => {
    await putTool("flaky_read", "p-flaky", "/flaky")
    upstream.script("/flaky", { status: 503 }, { status: 503 }, { status: 200, body: { ok: true } })
    const { step, task } = await runOne("flaky_read")
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(step).toMatchObject({ status: "succeeded", attempts: 3, output: { ok: true } })
    expect(step.last_error).toContain("HTTP 503")
    expect(upstream.at("/flaky")).toHaveLength(3)
  })

  it("does not repeat a write without an idempotency key after a timeout", async () => {
    // a POST has side effects and is not idempotent by default: the upstream may have applied it
    const spec = await putTool("post_plain", "p-post-plain", "/post-plain", { method: "POST", timeout_ms: 200 })
    expect(spec).toMatchObject({ side_effect: true, idempotent: false })
    upstream.script("/post-plain", "hang")
    const { step, task } = await runOne("post_plain")
    expect(task.status).toBe("failed")
    expect(step).toMatchObject({ status: "failed", attempts: 1, error: { code: "tool_failed" } })
    expect(step.error.message).toContain("200 ms")
    expect(upstream.at("/post-plain")).toHaveLength(1)
  })

  it("repeats a write that sends an idempotency key, with the same key on every attempt", async () => {
    await putTool("post_keyed", "p-post-keyed", "/post-keyed", {
      method: "POST",
      timeout_ms: 200,
      idempotency_header: "Idempotency-Key"
    })
    upstream.script("/post-keyed", "hang", "hang", { status: 201, body: { created: true } })
    const { step, task } = await runOne("post_keyed")
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(step).toMatchObject({ status: "succeeded", attempts: 3, output: { created: true } })
    const attempts = upstream.at("/post-keyed")
    expect(attempts).toHaveLength(3)
    const key = attempts[0]!.headers["idempotency-key"]
    expect(key).toMatch(/^[A-Za-z0-9_-]{16,}$/)
    expect(attempts.map((r) => r.headers["idempotency-key"])).toEqual([key, key, key])
    expect(attempts.map((r) => r.body)).toEqual(Array(3).fill({ q: "s" }))

    // another task, and another step of one task, are other writes: other keys
    upstream.received.length = 0
    upstream.script("/post-keyed", { status: 201 })
    const other = await runSteps(["a", "post_keyed"], ["b", "post_keyed"])
    expect(other.status).toBe("succeeded")
    const keys = upstream.at("/post-keyed").map((r) => r.headers["idempotency-key"])
    expect(keys).toHaveLength(2)
    expect(new Set([key, ...keys]).size).toBe(3)
  })

  it("does not retry a 400", async () => {
    await putTool("bad_read", "p-bad", "/bad")
    upstream.script("/bad", { status: 400, body: { error: "missing field" } })
    const { step } = await runOne("bad_read")
    expect(step).toMatchObject({
      status: "failed",
      attempts: 1,
      error: { code: "tool_failed", details: { status: 400, retryable: false } }
    })
    expect(upstream.at("/bad")).toHaveLength(1)
  })

  it("repeats a write refused with 429, no earlier than its Retry-After", async () => {
    // 429 means the request was not applied, so even a plain POST may be sent again
    await putTool("post_limited", "p-limited", "/limited", { method: "POST" })
    upstream.script("/limited", { status: 429, headers: { "retry-after": "2" } }, { status: 200, body: { ok: 1 } })
    const { step, task } = await runOne("post_limited")
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(step).toMatchObject({ status: "succeeded", attempts: 2, output: { ok: 1 } })
    expect(step.last_error).toContain("HTTP 429")
    const [first, second] = upstream.at("/limited")
    expect(upstream.at("/limited")).toHaveLength(2)
    const gap = second!.at - first!.at
    expect(gap).toBeGreaterThanOrEqual(2_000)
    expect(gap).toBeLessThan(4_000)
  })
})

describe("circuit breaker", () => {
  it("opens after the threshold, fails fast or falls back while open, and lets one probe through", async () => {
    await putTool("brk_read", "p-breaker", "/brk")
    await putTool("brk_backup", "p-breaker-backup", "/brk-backup")
    await putTool("brk_guarded", "p-breaker", "/brk", { fallback: "brk_backup" })
    upstream.script("/brk", { status: 503 })

    // three failed attempts (one task, retried) reach the threshold
    const first = await runOne("brk_read")
    expect(first.step).toMatchObject({ status: "failed", attempts: 3, error: { code: "tool_failed" } })
    expect(upstream.at("/brk")).toHaveLength(3)

    // open: nothing reaches the upstream; tasks fail fast, a tool with a fallback answers from it
    upstream.received.length = 0
    const started = performance.now()
    const fast = await runOne("brk_read")
    expect(performance.now() - started).toBeLessThan(500)
    expect(fast.step).toMatchObject({ status: "failed", error: { code: "upstream_unavailable" } })
    expect(fast.step.error.details.provider).toBe("p-breaker")
    expect(fast.step.error.details.retry_after_ms).toBeGreaterThan(0)
    expect(fast.step.error.details.retry_after_ms).toBeLessThanOrEqual(cooldownMs)
    const guarded = await runOne("brk_guarded")
    expect(guarded.task.status, JSON.stringify(guarded.task)).toBe("succeeded")
    expect(guarded.step).toMatchObject({ status: "succeeded", served_by: "brk_backup" })
    expect(guarded.task.output).toEqual({ path: "/brk-backup", status: 200 })
    expect(upstream.at("/brk")).toHaveLength(0)
    expect(upstream.at("/brk-backup")).toHaveLength(1)

    // what happens after the cooldown (one probe; its failure reopens, its success closes; an interrupted probe or
    // one the budget refuses is given back) is tested on the test clock, in ConnectionEntity.test.ts
  })

  // the call that trips the breaker reports its own failure and attempts, not a bare "circuit open"
  it("keeps the attempts and last error when the circuit opens between retries", async () => {
    await putTool("mid_read", "p-mid", "/mid", { max_attempts: 5 })
    upstream.script("/mid", { status: 503 })
    const { step } = await runOne("mid_read")
    // the third failure opens the circuit: the fourth attempt is refused before any request
    expect(upstream.at("/mid")).toHaveLength(3)
    expect(step).toMatchObject({ status: "failed", error: { code: "tool_failed", details: { status: 503 } } })
    expect(step.attempts).toBe(3)
    expect(step.error.message).toContain("HTTP 503")
  })

  it("stops calling a failing primary LLM and answers from the fallback LLM", async () => {
    const primary = await startFakeOpenAi()
    const backup = await startFakeOpenAi()
    try {
      const llmAdmin = await edge.sign({ tenant_id: "resilient-llm", role: "admin" })
      const as = (method: string, path: string, body?: unknown) => call(method, path, body, llmAdmin)
      expect((await as("PUT", "/v1/secrets/k", { value: "sk-test" })).status).toBe(204)
      for (const [llm_id, url] of [["primary", primary.url], ["backup", backup.url]] as const) {
        const put = await as("PUT", `/v1/llms/${llm_id}`, {
          llm_id,
          endpoint: url,
          auth: { type: "api_key", key: "k" }
        })
        expect(put.status, JSON.stringify(put.body)).toBe(200)
      }
      expect((await as("PUT", "/v1/settings", { default_llm: "primary", fallback_llms: ["backup"] })).status).toBe(200)
      primary.script({ kind: "status", status: 503 })
      backup.script({ kind: "answer", content: "from the backup" })
      const ask = async () => {
        const res = await as("POST", "/v1/tasks", { input: "Say hi", timeout_ms: 10_000 })
        expect(res.body).toMatchObject({ status: "succeeded", output: "from the backup" })
        expect(res.body.turns[0].llm_id).toBe("backup")
        return res.body
      }
      // each failed turn is one failure of the primary's connection; three open its circuit
      for (let i = 0; i < 3; i++) await ask()
      expect(primary.received).toHaveLength(3)
      expect(backup.received).toHaveLength(3)
      const open = await ask()
      expect(primary.received).toHaveLength(3)
      expect(backup.received).toHaveLength(4)
      expect(open.turns[0].attempts.map((a: any) => `${a.llm_id}:${a.outcome}`)).toEqual([
        "primary:failed",
        "backup:ok"
      ])
      expect(open.turns[0].attempts[0].error).toBe("circuit open")
    } finally {
      await primary.close()
      await backup.close()
    }
  })
})
