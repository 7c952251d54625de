import { makeClient } from "@altan/domain/Client"
import type { TaskId } from "@altan/domain/Ids"
import { TaskRequest } from "@altan/domain/Task"
import { layerProtocol, makeRpcClient, TaskRpcs } from "@altan/domain/TaskRpc"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as RpcClient from "@effect/rpc/RpcClient"
import { afterAll, beforeAll, describe, expect, it, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { makeProbes, startEdge } from "./fixtures.js"

const maxBodyBytes = 64 * 1024

const probes = makeProbes()
let edge: Awaited<ReturnType<typeof startEdge>>
let tokenA = ""
let tokenB = ""

beforeAll(async () => {
  edge = await startEdge(probes, { maxBodyBytes })
  tokenA = await edge.sign({ tenant_id: "tenant-a", role: "member" })
  tokenB = await edge.sign({ tenant_id: "tenant-b", role: "member" })
})

afterAll(() => edge.close())

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
const expectedOutput = { text: "Launch review on 2024-03-05T14:30:00.000Z" }

/** A `POST /v1/tasks` body, decoded like the server decodes it. */
const request = (input: unknown, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(TaskRequest)({ input, ...extra })

const hangingPlan = { steps: [{ id: "h", tool: "probe.hang", input: {} }] }

const waitForHang = Effect.promise(async () => {
  await probes.called("probe.hang")
})

/** What a client process provides: fetch for HTTP, `ws` for websockets (Node 20 has no global WebSocket). */
const ClientEnv = Layer.merge(FetchHttpClient.layer, NodeSocket.layerWebSocketConstructor)

layer(ClientEnv, { excludeTestServices: true })("HttpApiClient", (it) => {
  const client = (token: string) => makeClient({ baseUrl: edge.base, token })

  it.effect("submits a structured task and reads it back", () =>
    Effect.gen(function*() {
      const api = yield* client(tokenA)
      const task = yield* api.tasks.create({ payload: request(twoSteps) })
      expect(task.status).toBe("succeeded")
      expect(task.steps.map((s) => s.status)).toEqual(["succeeded", "succeeded"])
      expect(task.output).toEqual(expectedOutput)
      const again = yield* api.tasks.get({ path: { task_id: task.task_id } })
      expect(again).toEqual(task)
      const session = yield* api.sessions.get({ path: { session_id: task.session_id } })
      expect(session.task_ids).toEqual([task.task_id])
    }))

  it.effect("answers an async submit while the task runs (202 decoded as a Task)", () =>
    Effect.gen(function*() {
      const api = yield* client(tokenA)
      const accepted = yield* api.tasks.create({ payload: request(twoSteps, { mode: "async" }) })
      expect(["queued", "running", "succeeded"]).toContain(accepted.status)
      expect(accepted.task_id.startsWith(`${accepted.session_id}.`)).toBe(true)
    }))

  it.effect("fails with NotFound for another tenant's task", () =>
    Effect.gen(function*() {
      const task = yield* (yield* client(tokenA)).tasks.create({ payload: request(twoSteps) })
      const error = yield* (yield* client(tokenB)).tasks.get({ path: { task_id: task.task_id } }).pipe(Effect.flip)
      expect(error._tag).toBe("NotFound")
    }))

  it.effect("fails with Unauthorized for a bad token", () =>
    Effect.gen(function*() {
      const error = yield* (yield* client("not.a.jwt")).tasks.get({ path: { task_id: "s.t" as TaskId } }).pipe(
        Effect.flip
      )
      expect(error._tag).toBe("Unauthorized")
      expect(error).toMatchObject({ code: "invalid_token" })
    }))
})

for (const protocol of ["http", "websocket"] as const) {
  const url = () => protocol === "http" ? `${edge.base}/rpc` : `${edge.base.replace(/^http/, "ws")}/rpc/ws`
  const rpc = (token: string) =>
    protocol === "http"
      ? makeRpcClient({ url: url(), token, protocol })
      : makeRpcClient({ url: url(), token, protocol })

  layer(ClientEnv, { excludeTestServices: true })(`RpcClient over ${protocol}`, (it) => {
    it.scoped("SubmitTask in sync mode answers the finished task; GetTask reads it", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const task = yield* client.SubmitTask(request(twoSteps))
        expect(task.status).toBe("succeeded")
        expect(task.output).toEqual(expectedOutput)
        expect(yield* client.GetTask({ task_id: task.task_id })).toEqual(task)
        const session = yield* client.GetSession({ session_id: task.session_id })
        expect(session.task_ids).toEqual([task.task_id])
      }))

    it.scoped("SubmitTask in async mode answers at once; TaskEvents ends with the terminal event", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const accepted = yield* client.SubmitTask(request(twoSteps, { mode: "async" }))
        expect(["queued", "running", "succeeded"]).toContain(accepted.status)
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(client.TaskEvents({ task_id: accepted.task_id })))
        expect(events[0]!.type).toBe("task.queued")
        expect(events.at(-1)!.type).toBe("task.succeeded")
        expect(events.filter((e) => e.type === "tool.completed").map((e) => e.step_id)).toEqual(["parse", "note"])
        // resuming after an event id answers only what followed it
        const rest = yield* Stream.runCollect(client.TaskEvents({ task_id: accepted.task_id, after: events[0]!.id }))
        expect(Chunk.toReadonlyArray(rest).map((e) => e.id)).toEqual(events.slice(1).map((e) => e.id))
        expect((yield* client.GetTask({ task_id: accepted.task_id })).status).toBe("succeeded")
      }))

    it.scoped("ApproveStep and RejectStep decide a waiting call; the typed HTTP client decides too", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const oneCall = { steps: [{ id: "e", tool: "probe.echo", input: { value: protocol } }] }
        const waiting = yield* client.SubmitTask(request(oneCall, { approval_required: ["probe.echo"] }))
        expect(waiting.status).toBe("waiting")
        const approved = yield* client.ApproveStep({
          task_id: waiting.task_id,
          step_id: "e",
          input_hash: waiting.waiting_for![0]!.input_hash!
        })
        expect(approved.steps[0]!.approval?.decision).toBe("approved")
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(client.TaskEvents({ task_id: waiting.task_id })))
        expect(events.at(-1)!.type).toBe("task.succeeded")
        // a stale hash is the typed Conflict
        const other = yield* client.SubmitTask(request(oneCall, { approval_required: ["probe.echo"] }))
        const stale = yield* Effect.flip(
          client.ApproveStep({ task_id: other.task_id, step_id: "e", input_hash: "0".repeat(64) })
        )
        expect(stale).toMatchObject({ _tag: "Conflict", code: "stale_input_hash" })
        const rejected = yield* client.RejectStep({ task_id: other.task_id, step_id: "e", reason: "no" })
        expect(rejected.steps[0]!.status).toBe("rejected")
        // the HttpApi client has the same routes
        const third = yield* client.SubmitTask(request(oneCall, { approval_required: ["probe.echo"] }))
        const http = yield* makeClient({ baseUrl: edge.base, token: tokenA })
        const viaHttp = yield* http.tasks.reject({ path: { task_id: third.task_id, step_id: "e" }, payload: {} })
        expect(viaHttp.steps[0]!.status).toBe("rejected")
        const page = yield* http.approvals.list({ urlParams: {} })
        expect(page.approvals.map((a) => a.task_id)).not.toContain(third.task_id)
        // and the tenant's spend, typed
        const usage = yield* http.usage.get()
        expect(usage.usage.find((u) => u.budget === "tool_calls" && u.period === "day")!.used).toBeGreaterThan(0)
      }))

    it.scoped("a repeated idempotency key answers the same task", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const body = request(twoSteps, { idempotency_key: `rpc-${protocol}` })
        const first = yield* client.SubmitTask(body)
        const second = yield* client.SubmitTask(body)
        expect(second.task_id).toBe(first.task_id)
        expect(second.created_at).toBe(first.created_at)
      }))

    it.scoped("CancelTask interrupts a running task; its events end with task.cancelled", () =>
      Effect.gen(function*() {
        probes.reset()
        const client = yield* rpc(tokenA)
        const accepted = yield* client.SubmitTask(request(hangingPlan, { mode: "async" }))
        yield* waitForHang
        const events = yield* client.TaskEvents({ task_id: accepted.task_id }).pipe(
          Stream.runCollect,
          Effect.fork
        )
        const cancelled = yield* client.CancelTask({ task_id: accepted.task_id })
        expect(cancelled).toMatchObject({ status: "cancelled", steps: [{ tool: "probe.hang", status: "cancelled" }] })
        const collected = Chunk.toReadonlyArray(yield* events.await.pipe(Effect.flatten))
        expect(collected.at(-1)!.type).toBe("task.cancelled")
        const again = yield* client.CancelTask({ task_id: accepted.task_id }).pipe(Effect.flip)
        expect(again).toMatchObject({ _tag: "Conflict", code: "task_finished" })
      }))

    it.scoped("fails with InvalidRequest like HTTP (natural language without an LLM)", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const error = yield* client.SubmitTask(request("Book a meeting with Bob")).pipe(Effect.flip)
        expect(error).toMatchObject({ _tag: "InvalidRequest", code: "llm_not_configured" })
      }))

    it.scoped("tenant B gets NotFound for tenant A's task, its events, its cancel and its session", () =>
      Effect.gen(function*() {
        const task = yield* (yield* rpc(tokenA)).SubmitTask(request(twoSteps))
        const b = yield* rpc(tokenB)
        expect(yield* b.GetTask({ task_id: task.task_id }).pipe(Effect.flip)).toMatchObject({ _tag: "NotFound" })
        expect(yield* b.CancelTask({ task_id: task.task_id }).pipe(Effect.flip)).toMatchObject({ _tag: "NotFound" })
        expect(yield* Stream.runCollect(b.TaskEvents({ task_id: task.task_id })).pipe(Effect.flip)).toMatchObject({
          _tag: "NotFound"
        })
        expect(yield* b.GetSession({ session_id: task.session_id }).pipe(Effect.flip)).toMatchObject({
          _tag: "NotFound"
        })
      }))

    it.scoped("fails with Unauthorized without a token, with a bad one, with an expired one", () =>
      Effect.gen(function*() {
        // a client without the authorization middleware sends no token at all
        const anonymous = yield* Effect.flatMap(
          Layer.build(layerProtocol({ url: url(), protocol })),
          (context) => Effect.provide(RpcClient.make(TaskRpcs), context)
        )
        const missing = yield* anonymous.GetTask({ task_id: "s.t" as TaskId }).pipe(Effect.flip)
        expect(missing).toMatchObject({ _tag: "Unauthorized", code: "invalid_token", message: "missing bearer token" })
        const expired = yield* Effect.promise(() =>
          edge.sign({ tenant_id: "tenant-a" }, { exp: Math.floor(Date.now() / 1000) - 120 })
        )
        for (const [token, reason] of [["not.a.jwt", /malformed/], [expired, /expired/]] as const) {
          const client = yield* rpc(token)
          const error = yield* client.GetTask({ task_id: "s.t" as TaskId }).pipe(Effect.flip)
          expect(error).toMatchObject({ _tag: "Unauthorized", code: "invalid_token" })
          expect(error.message).toMatch(reason)
          // streams are authenticated too
          const streamError = yield* Stream.runCollect(client.TaskEvents({ task_id: "s.t" as TaskId })).pipe(
            Effect.flip
          )
          expect(streamError).toMatchObject({ _tag: "Unauthorized" })
        }
      }))

    it.scoped("a request over the body limit fails with RpcClientError, and the server stays up", () =>
      Effect.gen(function*() {
        const client = yield* rpc(tokenA)
        const error = yield* client.SubmitTask(request("x".repeat(maxBodyBytes + 1024))).pipe(Effect.flip)
        expect(error._tag).toBe("RpcClientError")
        const task = yield* (yield* rpc(tokenA)).SubmitTask(request(twoSteps))
        expect(task.status).toBe("succeeded")
      }))
  })
}

describe("the edge in front of /rpc", () => {
  it("refuses an oversized RPC body with 413", async () => {
    const res = await fetch(`${edge.base}/rpc`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokenA}`, "content-type": "application/ndjson" },
      body: "x".repeat(maxBodyBytes + 1)
    })
    expect(res.status).toBe(413)
    expect((await res.json()).error.code).toBe("payload_too_large")
  })
})
