import * as TaskStore from "@altan/agent/TaskStore"
import { acceptedTask, AgentSession } from "@altan/domain/AgentSession"
import type { TaskId, TenantId } from "@altan/domain/Ids"
import { Principal } from "@altan/domain/Principal"
import { TaskRequest } from "@altan/domain/Task"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { ToolWorker } from "@altan/domain/ToolWorker"
import { taskIds } from "@altan/integrator/Tasks"
import * as Redis from "@altan/redis/Redis"
import * as ExecutionLedger from "@altan/tool/ExecutionLedger"
import { afterAll, beforeAll, describe, expect, it, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { Redis as IORedis } from "ioredis"
import { createHash, randomBytes } from "node:crypto"
import { createServer, type Server } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { clusterLayer, makeProbes, startEdge } from "./fixtures.js"

/**
 * What a task resumed after its runner died finds, set up by writing into Redis what the dead runner would have
 * left (a task record with a step `running`, an execution ledger entry or none), then letting the session run it:
 * a started attempt is asked for again, never sent twice; an outcome recorded by the tool service is used as is; an
 * execution cut off mid-call becomes `unknown_outcome` unless calling again is safe or the tenant chose `retry`.
 * Also: defects and deadlines end steps, and a repeated submit of a task with no `Run` runs it.
 */
const url = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `test-${randomBytes(5).toString("hex")}`
const tenant = "rec" as TenantId
const principal = new Principal({ tenantId: tenant, userId: "ops" as any, role: "admin" })

/** The vendor: counts every write it receives, by marker, with the idempotency key it came with. */
const received: Array<{ marker: string; key: string | undefined }> = []
let vendor: Server
let vendorBase = ""
let redis: IORedis
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
const specs: Record<string, ToolSpec> = {}

const call = (method: string, path: string, body?: unknown) => edge.call(method, path, admin, body)
const withStore = <A, E>(f: (store: TaskStore.TaskStore["Type"]) => Effect.Effect<A, E>) =>
  Effect.runPromise(
    Effect.flatMap(TaskStore.TaskStore, f).pipe(
      Effect.provide(TaskStore.layerRedis({ prefix }).pipe(Layer.provide(Redis.layer({ url })))),
      Effect.orDie
    )
  )
const ledgerKey = (tool: string, key: string) => `${prefix}:t:${tenant}:x:${tool}:${key}`

/** Writes what a runner that died while running step `a` (attempt 1) of this task would have left. */
const crashedTask = async (
  session: string,
  tool: "plain_post" | "keyed_post",
  marker: string,
  options: { readonly status?: "running" | "queued"; readonly onUnknown?: "fail" | "retry" } = {}
) => {
  const key = `k-${marker}`
  const input = { steps: [{ id: "a", tool, input: { marker } }] }
  const { taskId } = taskIds(tenant, session, key)
  const request = Schema.decodeUnknownSync(TaskRequest)({ input, session_id: session, idempotency_key: key })
  const task = acceptedTask({ task_id: taskId, request, principal, llms: [], accepted_at: new Date().toISOString() })
  const running = options.status !== "queued"
  await withStore((store) =>
    store.put(tenant, {
      task: running
        ? {
          ...task,
          status: "running",
          steps: [{ ...task.steps[0]!, status: "running", input: { marker }, attempts: 1, started_at: task.created_at }]
        }
        : task,
      specs: [specs[tool]!],
      on_unknown_outcome: options.onUnknown ?? "fail"
    }, { created: true })
  )
  // the same request again, as a client retrying it would send it
  const resubmit = () => call("POST", "/v1/tasks", { ...request, timeout_ms: 15_000 })
  return { taskId, resubmit }
}

beforeAll(async () => {
  vendor = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || "{}")
      received.push({ marker: body.marker, key: req.headers["idempotency-key"] as string | undefined })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ marker: body.marker, n: received.filter((r) => r.marker === body.marker).length }))
    })
  })
  await new Promise<void>((r) => vendor.listen(0, "127.0.0.1", r))
  vendorBase = `http://127.0.0.1:${(vendor.address() as { port: number }).port}`
  redis = new IORedis(url)
  edge = await startEdge(makeProbes(), { redis: { url, prefix }, agent: { stepTimeout: Duration.seconds(20) } })
  admin = await edge.sign({ tenant_id: tenant, role: "admin" })
  expect((await call("PUT", "/v1/settings", { egress_allowlist: [new URL(vendorBase).host] })).status).toBe(200)
  for (const [id, extra] of [["plain_post", {}], ["keyed_post", { idempotency_header: "Idempotency-Key" }]] as const) {
    const put = await call("PUT", `/v1/tools/${id}`, {
      tool_id: id,
      name: id,
      parameters: [{ name: "marker", type: "string" }],
      endpoint: `${vendorBase}/effect`,
      method: "POST",
      auth: "none",
      ...extra
    })
    expect(put.status, put.text).toBe(200)
    specs[id] = put.body
  }
})

afterAll(async () => {
  await edge.close()
  const keys = await redis.keys(`${prefix}:*`)
  if (keys.length > 0) await redis.del(...keys)
  redis.disconnect()
  vendor.closeAllConnections()
  await new Promise((r) => vendor.close(r))
})

const sent = (marker: string) => received.filter((r) => r.marker === marker)

describe("a task resumed after its runner died", () => {
  it("uses the outcome the tool service recorded for the started attempt, without calling again", async () => {
    const { resubmit, taskId } = await crashedTask("r1", "plain_post", "recorded")
    await redis.set(
      ledgerKey("plain_post", `${taskId}/a/1/1`),
      JSON.stringify({ state: "done", outcome: { ok: { output: { marker: "recorded", n: 1 } } } })
    )
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("succeeded")
    expect(task.body.output).toEqual({ marker: "recorded", n: 1 })
    expect(task.body.steps[0]).toMatchObject({ status: "succeeded", attempts: 1 })
    expect(sent("recorded")).toEqual([])
  })

  it("makes an attempt cut off mid-call unknown_outcome, and the task fails naming the step", async () => {
    const { resubmit, taskId } = await crashedTask("r2", "plain_post", "cutoff")
    // started by a runner that is gone: no lease renews it
    await redis.set(
      ledgerKey("plain_post", `${taskId}/a/1/1`),
      JSON.stringify({ state: "started", runner: "10.0.0.9:34431", deadline: Date.now() + 60_000 })
    )
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("failed")
    expect(task.body.error).toMatchObject({ code: "unknown_outcome", details: { unknown_steps: ["a"] } })
    expect(task.body.error.message).toContain("step \"a\" (plain_post)")
    expect(task.body.steps[0]).toMatchObject({
      status: "unknown_outcome",
      attempts: 1,
      error: { code: "unknown_outcome" }
    })
    expect(task.body.steps[0].started_at).toBeDefined()
    expect(sent("cutoff")).toEqual([])
  })

  it("calls again, as a new attempt, when the tenant chose on_unknown_outcome: retry", async () => {
    const { resubmit, taskId } = await crashedTask("r3", "plain_post", "retried", { onUnknown: "retry" })
    await redis.set(
      ledgerKey("plain_post", `${taskId}/a/1/1`),
      JSON.stringify({ state: "started", runner: "10.0.0.9:34431", deadline: Date.now() + 60_000 })
    )
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("succeeded")
    expect(task.body.steps[0]).toMatchObject({ status: "succeeded", attempts: 2 })
    expect(sent("retried")).toHaveLength(1)
  })

  it("calls again a tool that sends an idempotency key, with the same key", async () => {
    const { resubmit, taskId } = await crashedTask("r4", "keyed_post", "keyed")
    await redis.set(
      ledgerKey("keyed_post", `${taskId}/a/1/1`),
      JSON.stringify({ state: "started", runner: "10.0.0.9:34431", deadline: Date.now() + 60_000 })
    )
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("succeeded")
    expect(sent("keyed")).toHaveLength(1)
    // the key every attempt of this step sends: derived from tenant, task, step, tool and input
    const key = createHash("sha256").update(
      [tenant, taskId, "a", "keyed_post", JSON.stringify({ marker: "keyed" })].join("\u0000")
    ).digest("base64url")
    expect(sent("keyed")[0]!.key).toBe(key)
  })

  it("calls an attempt that never reached the tool service", async () => {
    const { resubmit } = await crashedTask("r5", "plain_post", "unsent")
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("succeeded")
    expect(task.body.steps[0]).toMatchObject({ status: "succeeded", attempts: 1 })
    expect(sent("unsent")).toHaveLength(1)
  })

  it("runs a task whose submit was stored but whose Run never was, once submitted again", async () => {
    const { resubmit } = await crashedTask("r6", "plain_post", "queued", { status: "queued" })
    const task = await resubmit()
    expect(task.body.status, task.text).toBe("succeeded")
    expect(sent("queued")).toHaveLength(1)
    // and again: answered from the record, nothing runs twice
    expect((await resubmit()).body.status).toBe("succeeded")
    expect(sent("queued")).toHaveLength(1)
  })

  it("records the tenant's on_unknown_outcome with every task it accepts", async () => {
    expect(
      (await call("PUT", "/v1/settings", {
        egress_allowlist: [new URL(vendorBase).host],
        on_unknown_outcome: "retry"
      })).status
    ).toBe(200)
    expect((await call("GET", "/v1/settings")).body.on_unknown_outcome).toBe("retry")
    const task = await call("POST", "/v1/tasks", {
      input: { steps: [{ id: "a", tool: "plain_post", input: { marker: "setting" } }] }
    })
    expect(task.body.status).toBe("succeeded")
    const stored = await withStore((store) => store.get(tenant, task.body.task_id))
    expect(stored._tag === "Some" && stored.value.on_unknown_outcome).toBe("retry")
    expect((await call("PUT", "/v1/settings", { on_unknown_outcome: "sometimes" })).status).toBe(400)
  })
})

describe("a natural-language task resumed after its runner died", () => {
  it("goes on from its recorded transcript: the started call's recorded outcome, then the next turn only", async () => {
    const fake = await startFakeOpenAi()
    try {
      expect((await call("PUT", "/v1/secrets/llm_key", { value: "sk-resume" })).status).toBe(204)
      expect(
        (await call("PUT", "/v1/llms/m", {
          llm_id: "m",
          endpoint: fake.url,
          auth: { type: "api_key", key: "llm_key" }
        })).status
      ).toBe(200)
      expect(
        (await call("PUT", "/v1/settings", {
          default_llm: "m",
          egress_allowlist: [new URL(vendorBase).host]
        })).status
      ).toBe(200)
      fake.script({ kind: "answer", content: "All done." })
      const key = "k-nl-resume"
      const { taskId } = taskIds(tenant, "nl", key)
      const request = Schema.decodeUnknownSync(TaskRequest)({
        input: "Post it.",
        session_id: "nl",
        idempotency_key: key
      })
      const accepted = acceptedTask({
        task_id: taskId,
        request,
        principal,
        llms: ["m"],
        accepted_at: new Date().toISOString()
      })
      // the dead runner had asked the model once (it called plain_post) and started that call
      await withStore((store) =>
        store.put(tenant, {
          task: {
            ...accepted,
            status: "running",
            steps: [{
              id: "1.1",
              tool: "plain_post",
              status: "running",
              input: { marker: "nl" },
              attempts: 1,
              started_at: accepted.created_at
            }],
            turns: [{
              llm_id: "m",
              attempts: [{ llm_id: "m", outcome: "ok", duration_ms: 3 }],
              tool_calls: ["plain_post"],
              prompt_tokens: 11,
              completion_tokens: 7,
              finished_at: accepted.created_at
            }]
          },
          on_unknown_outcome: "fail",
          transcript: [
            { role: "user", content: "Post it." },
            {
              role: "assistant",
              content: null,
              tool_calls: [{ id: "call_1", name: "plain_post", arguments: { marker: "nl" } }]
            }
          ]
        }, { created: true })
      )
      await redis.set(
        ledgerKey("plain_post", `${taskId}/1.1/1/1`),
        JSON.stringify({ state: "done", outcome: { ok: { output: { marker: "nl", n: 1 } } } })
      )
      const task = await call("POST", "/v1/tasks", { ...request, timeout_ms: 15_000 })
      expect(task.body.status, task.text).toBe("succeeded")
      expect(task.body.output).toBe("All done.")
      expect(task.body.steps).toMatchObject([{ id: "1.1", status: "succeeded", output: { marker: "nl", n: 1 } }])
      expect(task.body.turns).toHaveLength(2)
      // the model was asked the second turn only, with the first turn's call and its recorded result
      expect(fake.received).toHaveLength(1)
      const messages = fake.received[0]!.body.messages
      expect(messages.at(-1)).toMatchObject({ role: "tool", tool_call_id: "call_1" })
      expect(messages.at(-1).content).toContain("\"n\":1")
      expect(sent("nl")).toEqual([])
      // the exchange joined the session's conversation once
      expect((await call("GET", "/v1/sessions/nl")).body.message_count).toBe(4)
    } finally {
      await fake.close()
    }
  })
})

describe("steps end, whatever their tool does", () => {
  it("a defect while running a tool fails its step with the message, and the task goes on to its end", async () => {
    for (
      const bad of ["http://[::1/", "http://a b/", "http://[fe80::1%25lo]/", "http://[::1]:99999/", "https://:80/"]
    ) {
      const task = await call("POST", "/v1/tasks", {
        input: {
          steps: [
            { id: "bad", tool: "http.request", input: { method: "GET", url: bad } },
            { id: "fine", tool: "text.template", input: { template: "ok", variables: {} } }
          ]
        },
        timeout_ms: 10_000
      })
      expect(task.status, task.text).toBe(200)
      expect(task.body.status, `${bad}: ${task.text}`).toBe("failed")
      const [failed, fine] = task.body.steps
      expect(failed).toMatchObject({ status: "failed", error: { code: "tool_failed" } })
      expect(failed.error.message).toMatch(/^http\.request failed: /)
      expect(fine, JSON.stringify(task.body.steps)).toMatchObject({ status: "succeeded" })
    }
  })
})

describe("calls that break", () => {
  it(
    "a call whose handler is interrupted (a runner shutting down) is asked again, by the connection and the step",
    async () => {
      const probes = makeProbes()
      const quick = await startEdge(probes)
      try {
        const token = await quick.sign({ tenant_id: "breaks", role: "member" })
        // twice: the connection asks again; eight times: past the connection's three, the step asks again too
        for (const times of [2, 8]) {
          const task = await quick.call("POST", "/v1/tasks", token, {
            input: { steps: [{ id: "a", tool: "probe.interrupt_first", input: { label: `x${times}`, times } }] },
            timeout_ms: 30_000
          })
          expect(task.body.status, task.text).toBe("succeeded")
          expect(task.body.output).toEqual({ label: `x${times}`, calls: times + 1 })
          expect(task.body.steps[0]).toMatchObject({ status: "succeeded", attempts: 1 })
        }
      } finally {
        await quick.close()
      }
    },
    60_000
  )
})

describe("step deadlines", () => {
  it("a step past its deadline fails with timeout, and the task ends", async () => {
    const quick = await startEdge(makeProbes(), { agent: { stepTimeout: Duration.millis(500) } })
    try {
      const token = await quick.sign({ tenant_id: "deadline", role: "member" })
      const task = await quick.call("POST", "/v1/tasks", token, {
        input: { steps: [{ id: "stuck", tool: "probe.hang" }] },
        timeout_ms: 10_000
      })
      expect(task.body.status, task.text).toBe("failed")
      expect(task.body.steps[0]).toMatchObject({ status: "failed", error: { code: "timeout" } })
      expect(task.body.steps[0].duration_ms).toBeGreaterThanOrEqual(500)
      expect(task.body.steps[0].duration_ms).toBeLessThan(5_000)
    } finally {
      await quick.close()
    }
  })
})

describe("an execution key runs once", () => {
  const probes = makeProbes()
  const ledger = ExecutionLedger.makeMemory()
  layer(clusterLayer(probes, { ledger: Layer.succeed(ExecutionLedger.ExecutionLedger, ledger) }), {
    excludeTestServices: true
  })("tool service ledger", (it) => {
    it.effect("a Run whose task record is gone records the task again from its submit, and runs it", () =>
      Effect.gen(function*() {
        const session = (yield* AgentSession.client)("t9/lost")
        const submit = {
          task_id: "lost.t1" as TaskId,
          request: Schema.decodeUnknownSync(TaskRequest)({
            input: { steps: [{ id: "a", tool: "probe.echo", input: { value: "again" } }] }
          }),
          principal: new Principal({ tenantId: "t9" as TenantId, userId: "ops" as any, role: "member" }),
          llms: [],
          specs: probes.tools.map((t) => t.spec),
          accepted_at: new Date().toISOString()
        }
        // no Submit was ever processed here, as if its record had been lost with the runner that made it
        yield* session.Run({ task_id: submit.task_id, submit })
        const task = yield* session.GetTask({ task_id: submit.task_id })
        expect(task.status).toBe("succeeded")
        expect(task.output).toEqual({ value: "again", nested: { list: [1, 2, 3] } })
        expect(task.created_at).toBe(submit.accepted_at)
      }))

    it.effect(
      "repeats of a key join the execution in flight or get its recorded outcome; a new key runs",
      () =>
        Effect.gen(function*() {
          const worker = (yield* ToolWorker.client)("t9/probe.effect")
          const execute = (key: string) => worker.Execute({ input: { label: "x", ms: 300 }, execution_key: key })
          // a redelivery arriving while the first is in flight
          const [first, second] = yield* Effect.all([execute("task/a/1/1"), execute("task/a/1/1")], {
            concurrency: "unbounded"
          })
          expect(first.output).toEqual({ label: "x", n: 1 })
          expect(second.output).toEqual(first.output)
          // a repeat after it finished
          expect((yield* execute("task/a/1/1")).output).toEqual({ label: "x", n: 1 })
          expect(probes.calls.filter((c) => c.tool === "probe.effect")).toHaveLength(1)
          // another attempt is another execution
          expect((yield* execute("task/a/2/1")).output).toEqual({ label: "x", n: 2 })
          // a key another runner started and never finished is not run again: once its lease (6 s) runs out without
          // being renewed, its outcome is unknown
          yield* ledger.claim("t9" as TenantId, "probe.effect", "task/b/1/1", {
            runner: "gone:1",
            deadline: Date.now() + 60_000
          })
          const unknown = yield* Effect.flip(
            worker.Execute({ input: { label: "y" }, execution_key: "task/b/1/1" }).pipe(
              Effect.timeout("20 seconds")
            )
          )
          expect(unknown).toMatchObject({ _tag: "ToolFailed", unknown_outcome: true, retryable: false })
          expect(probes.calls.filter((c) => (c.input as { label: string }).label === "y")).toEqual([])
        }),
      { timeout: 30_000 }
    )
  })
})
