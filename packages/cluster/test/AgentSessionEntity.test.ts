import * as AgentService from "@altan/agent/AgentService"
import { AgentSession, type SubmitPayload } from "@altan/domain/AgentSession"
import type { TaskId, TenantId, UserId } from "@altan/domain/Ids"
import { Principal } from "@altan/domain/Principal"
import { TaskRequest } from "@altan/domain/Task"
import { SecretStore } from "@altan/integrator/SecretStore"
import { TenantConfig } from "@altan/integrator/TenantConfig"
import * as ToolService from "@altan/tool/ToolService"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { toolsAndConnections } from "./entityPeers.js"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes } from "./fixtures.js"

// `AgentSessionLive`'s handlers through `Entity.makeTestClient`, with `Connection` and `ToolWorker` test clients as
// the entities it calls: no sharding, no runner, no message storage (so nothing here is about redelivery; the
// durability tests run real runners for that).

const acme = "acme" as TenantId
const globex = "globex" as TenantId

let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
beforeAll(async () => {
  fake = await startFakeOpenAi()
})
afterAll(() => fake.close())

const setup = Effect.gen(function*() {
  const probes = makeProbes()
  const { context, peers } = yield* toolsAndConnections({ tools: probes.tools, llm: { maxAttempts: 1 } })
  const sessions = yield* peers.add(AgentSession, AgentService.layerTest().pipe(Layer.provide(ToolService.pureTools)))
    .pipe(
      Effect.provide(context)
    )
  return {
    probes,
    session: (tenant: TenantId, session: string) => sessions(`${tenant}/${session}`),
    config: Context.get(context, TenantConfig),
    secrets: Context.get(context, SecretStore)
  }
})

let counter = 0
const submitOf = (
  tenant: TenantId,
  session: string,
  request: unknown,
  options: { readonly llms?: ReadonlyArray<string>; readonly specs?: SubmitPayload["specs"] } = {}
): SubmitPayload => ({
  task_id: `${session}.t${++counter}` as TaskId,
  request: Schema.decodeUnknownSync(TaskRequest)(request),
  principal: new Principal({ tenantId: tenant, userId: "ana" as UserId, role: "member" }),
  llms: options.llms ?? [],
  ...(options.specs ? { specs: options.specs } : {}),
  accepted_at: new Date().toISOString()
})

describe("AgentSession (entity test client)", () => {
  it.scopedLive("an async plan runs by the session's own Run: steps in order, events to the end, its output", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s1")
      const submit = submitOf(acme, "s1", {
        input: {
          steps: [
            { id: "a", tool: "probe.echo", input: { value: "first" } },
            { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output.value" } } }
          ]
        },
        mode: "async"
      }, { specs: world.probes.tools.map((t) => t.spec) })
      const accepted = yield* session.Submit(submit)
      expect(accepted).toMatchObject({ task_id: submit.task_id, status: "queued", user_id: "ana" })
      expect(accepted.steps.map((s) => s.status)).toEqual(["pending", "pending"])

      const done = yield* session.GetTask({ task_id: submit.task_id, wait_ms: 5_000 })
      expect(done.status).toBe("succeeded")
      expect(done.output).toEqual({ value: "first", nested: { list: [1, 2, 3] } })
      expect(world.probes.calls.map((c) => c.input)).toEqual([{ value: "first" }, { value: "first" }])

      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(session.Events({ task_id: submit.task_id })))
      expect(events[0]!.type).toBe("task.queued")
      expect(events.at(-1)!.type).toBe("task.succeeded")
      expect(events.filter((e) => e.type === "tool.completed").map((e) => e.step_id)).toEqual(["a", "b"])
      // from a Last-Event-ID: only what came after it
      const rest = yield* Stream.runCollect(session.Events({ task_id: submit.task_id, after: events.at(-2)!.id }))
      expect(Chunk.toReadonlyArray(rest).map((e) => e.id)).toEqual([events.at(-1)!.id])
      expect((yield* session.GetSession()).task_ids).toEqual([submit.task_id])
    }))

  it.scopedLive("a sync plan runs in its submit, which answers it ended; a cancel ends it there too", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s5")
      const specs = { specs: world.probes.tools.map((t) => t.spec) }
      const submit = submitOf(acme, "s5", {
        input: {
          steps: [
            { id: "a", tool: "probe.echo", input: { value: "first" } },
            { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output.value" } } }
          ]
        }
      }, specs)
      const done = yield* session.Submit(submit)
      expect(done).toMatchObject({ status: "succeeded", output: { value: "first", nested: { list: [1, 2, 3] } } })
      expect(done.steps.map((s) => s.status)).toEqual(["succeeded", "succeeded"])
      // no Run of its own: the task's events still run from queued to its end
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(session.Events({ task_id: submit.task_id })))
      expect([events[0]!.type, events.at(-1)!.type]).toEqual(["task.queued", "task.succeeded"])
      // a repeat answers the ended task, running nothing again
      expect((yield* session.Submit(submit)).status).toBe("succeeded")
      expect(world.probes.calls).toHaveLength(2)

      const stuck = submitOf(acme, "s5", { input: { steps: [{ id: "stuck", tool: "probe.hang", input: {} }] } }, specs)
      const answer = yield* Effect.fork(session.Submit(stuck))
      yield* world.probes.calledEffect("probe.hang")
      expect((yield* session.Cancel({ task_id: stuck.task_id })).status).toBe("cancelled")
      expect((yield* Fiber.join(answer)).status).toBe("cancelled")
    }))

  it.scopedLive("a repeated submit answers the recorded task and its write runs once", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s2")
      const submit = submitOf(acme, "s2", {
        input: { steps: [{ id: "w", tool: "probe.effect", input: { label: "once", ms: 150 } }] },
        mode: "async"
      }, { specs: world.probes.tools.map((t) => t.spec) })
      const first = yield* session.Submit(submit)
      yield* world.probes.calledEffect("probe.effect")
      const again = yield* session.Submit(submit)
      expect(again.task_id).toBe(first.task_id)
      expect(again.status).toBe("running")
      const done = yield* session.GetTask({ task_id: submit.task_id, wait_ms: 5_000 })
      expect(done).toMatchObject({ status: "succeeded", output: { label: "once", n: 1 } })
      const afterEnd = yield* session.Submit(submit)
      expect(afterEnd.status).toBe("succeeded")
      expect(world.probes.calls.filter((c) => c.tool === "probe.effect")).toHaveLength(1)
    }))

  it.scopedLive("a principal of another tenant is refused, and a session never shows another tenant's task", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s3")
      const foreign = submitOf(globex, "s3", {
        input: { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }] }
      })
      expect(yield* Effect.flip(session.Submit(foreign))).toMatchObject({ _tag: "InvalidRequest" })
      expect(yield* Effect.flip(session.GetTask({ task_id: foreign.task_id }))).toMatchObject({ _tag: "NotFound" })
      expect(world.probes.calls).toEqual([])

      const own = submitOf(globex, "s3", { input: { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }] } }, {
        specs: world.probes.tools.map((t) => t.spec)
      })
      yield* (yield* world.session(globex, "s3")).Submit(own)
      // the same session name under acme is another session
      expect(yield* Effect.flip(session.GetTask({ task_id: own.task_id }))).toMatchObject({ _tag: "NotFound" })
      expect(yield* Effect.flip(session.Cancel({ task_id: own.task_id }))).toMatchObject({ _tag: "NotFound" })
    }))

  it.scopedLive("Cancel stops a running step and ends the task; a finished task cannot be cancelled", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s4")
      const submit = submitOf(acme, "s4", {
        input: {
          steps: [
            { id: "stuck", tool: "probe.hang", input: {} },
            { id: "after", tool: "probe.echo", input: { value: 2 }, depends_on: ["stuck"] }
          ]
        },
        mode: "async"
      }, { specs: world.probes.tools.map((t) => t.spec) })
      yield* session.Submit(submit)
      yield* world.probes.calledEffect("probe.hang")
      const cancelled = yield* session.Cancel({ task_id: submit.task_id })
      expect(cancelled.status).toBe("cancelled")
      expect(cancelled.steps.map((s) => s.status)).toEqual(["cancelled", "cancelled"])
      expect((yield* session.GetTask({ task_id: submit.task_id })).status).toBe("cancelled")
      expect(yield* Effect.flip(session.Cancel({ task_id: submit.task_id }))).toMatchObject({
        _tag: "Conflict",
        code: "task_finished"
      })
      expect(world.probes.calls.map((c) => c.tool)).toEqual(["probe.hang"])
    }))

  // on the test clock: the deadline passes when the test says (the test client delivers the deadline's message at
  // once, where the cluster's storage would hold it until its time; the session waits out the rest)
  it.scoped("a call no one decides expires at its deadline: the task fails approval_expired, nothing runs", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const session = yield* world.session(acme, "s6")
      const submit = {
        ...submitOf(acme, "s6", {
          input: {
            steps: [
              { id: "w", tool: "probe.effect", input: { label: "never" } },
              { id: "later", tool: "probe.echo", input: { value: 1 }, depends_on: ["w"] }
            ]
          }
        }, { specs: world.probes.tools.map((t) => t.spec) }),
        approval_required: ["*side_effect"],
        approval_timeout_ms: 60_000
      }
      yield* session.Submit(submit)
      const waiting = yield* session.GetTask({ task_id: submit.task_id, wait_ms: 5_000 })
      expect(waiting.status).toBe("waiting")
      expect(waiting.steps.map((s) => s.status)).toEqual(["waiting_approval", "pending"])
      expect(waiting.steps[0]!.approval).toMatchObject({
        requested_at: new Date(0).toISOString(),
        expires_at: new Date(60_000).toISOString()
      })

      yield* TestClock.adjust("59 seconds")
      expect((yield* session.GetTask({ task_id: submit.task_id })).status).toBe("waiting")
      yield* TestClock.adjust("1 second")
      const expired = yield* session.GetTask({ task_id: submit.task_id, wait_ms: 5_000 })
      expect(expired.status).toBe("failed")
      expect(expired.error).toMatchObject({ code: "approval_expired", message: expect.stringContaining("\"w\"") })
      expect(expired.steps.map((s) => s.status)).toEqual(["expired", "cancelled"])
      // the expiry is logged with the end it brings, before it: a follower (which stops at the end) sees it
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(session.Events({ task_id: submit.task_id })))
      expect(events.map((e) => e.type)).toEqual([
        "task.queued",
        "task.started",
        "approval.requested",
        "task.waiting",
        "approval.decided",
        "task.failed"
      ])
      expect(events[4]!.data).toMatchObject({ step_id: "w", decision: "expired" })
      // too late to decide
      const late = yield* Effect.flip(session.Decide({
        task_id: submit.task_id,
        step_id: "w",
        principal: submit.principal,
        decision: { _tag: "Approve", input_hash: expired.steps[0]!.approval!.input_hash }
      }))
      expect(late).toMatchObject({ _tag: "Conflict", code: "not_waiting" })
      expect(world.probes.calls).toEqual([])
    }))

  it.scopedLive("a natural-language task: the model's tool call runs through the connection, and it answers", () =>
    Effect.gen(function*() {
      const world = yield* setup
      yield* Effect.orDie(world.secrets.put(acme, "llm_key", Redacted.make("sk-llm-5")))
      yield* world.config.putLlm(acme, {
        llm_id: "main",
        endpoint: fake.url,
        auth: { type: "api_key", key: "llm_key" },
        model: "m"
      })
      fake.script(
        { kind: "tools", calls: [{ name: "probe-echo", arguments: `{"value": "ping"}` }] },
        { kind: "answer", content: "echoed ping" }
      )
      const session = yield* world.session(acme, "s5")
      const submit = submitOf(acme, "s5", { input: "echo ping", tools: ["probe.echo"] }, { llms: ["main"] })
      yield* session.Submit(submit)
      const done = yield* session.GetTask({ task_id: submit.task_id, wait_ms: 5_000 })
      expect(done).toMatchObject({ status: "succeeded", output: "echoed ping", llm_id: "main" })
      expect(world.probes.calls).toEqual([{ tool: "probe.echo", input: { value: "ping" } }])
      expect(fake.received).toHaveLength(2)
      expect(fake.received[0]!.authorization).toBe("Bearer sk-llm-5")
      // the model was offered the task's one tool, and saw its result
      expect(fake.received[0]!.body.tools.map((t: any) => t.function.name)).toEqual(["probe-echo"])
      const toolMessage = fake.received[1]!.body.messages.find((m: any) => m.role === "tool")
      expect(JSON.parse(toolMessage.content)).toMatchObject({ output: { value: "ping" } })

      // the session keeps the conversation; Reset forgets it, not the tasks
      expect((yield* session.GetSession()).message_count).toBeGreaterThan(0)
      yield* session.Reset()
      expect(yield* session.GetSession()).toMatchObject({ message_count: 0, task_ids: [submit.task_id] })
    }))
})
