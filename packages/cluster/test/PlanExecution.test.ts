import type { TaskRequest } from "@altan/domain/Task"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { makeProbes, startEdge } from "./fixtures.js"

const probes = makeProbes()
let edge: Awaited<ReturnType<typeof startEdge>>
let token = ""
let n = 0

beforeAll(async () => {
  edge = await startEdge(probes)
  token = await edge.sign({ tenant_id: "t1", role: "member" })
})
afterAll(() => edge.close())

/** Submits a plan through the public API (which checks it before accepting) and waits for its end. */
const submit = (input: unknown, extra: Partial<TaskRequest> = {}) =>
  Effect.promise(async () => {
    probes.reset()
    const res = await edge.call("POST", "/v1/tasks", token, {
      input,
      session_id: `s${++n}`,
      timeout_ms: 10_000,
      ...extra
    })
    if (res.status === 400) return { rejected: { _tag: "InvalidRequest", ...res.body.error }, task: undefined }
    expect(res.status, res.text).toBe(200)
    return { rejected: undefined, task: res.body }
  })

const call = (method: string, path: string, body?: unknown) =>
  Effect.promise(() => edge.call(method, path, token, body))

describe("structured plans", () => {
  it.effect("runs independent steps concurrently and feeds outputs to dependants", () =>
    Effect.gen(function*() {
      const { task } = yield* submit({
        steps: [
          { id: "a", tool: "probe.barrier", input: { label: "A" } },
          { id: "b", tool: "probe.barrier", input: { label: "B" } },
          {
            id: "c",
            tool: "probe.echo",
            input: { value: { from_a: { $ref: "a.output.label" }, from_b: { $ref: "b.output" } } }
          }
        ]
      })
      expect(task!.status).toBe("succeeded")
      expect(probes.maxInFlight()).toBe(2)
      expect(task!.usage.tool_calls).toBe(3)
      const [a, b, c] = task!.steps
      expect(a!.output).toEqual({ label: "A", concurrent: 2 })
      expect(b!.output).toEqual({ label: "B", concurrent: 2 })
      expect(c!.input).toEqual({ value: { from_a: "A", from_b: { label: "B", concurrent: 2 } } })
      expect(task!.output).toEqual({
        value: { from_a: "A", from_b: { label: "B", concurrent: 2 } },
        nested: { list: [1, 2, 3] }
      })
      for (const s of task!.steps) {
        expect(s.status).toBe("succeeded")
        expect(s.attempts).toBe(1)
        expect(Date.parse(s.finished_at!)).toBeGreaterThanOrEqual(Date.parse(s.started_at!))
      }
      // c ran only after both of its inputs existed
      expect(Date.parse(c!.started_at!)).toBeGreaterThanOrEqual(Date.parse(a!.finished_at!))
    }))

  it.effect("a step waits for the steps it depends_on", () =>
    Effect.gen(function*() {
      const { task } = yield* submit({
        steps: [
          { id: "b", tool: "probe.echo", input: { value: "B" }, depends_on: ["a"] },
          { id: "a", tool: "probe.echo", input: { value: "A" } }
        ]
      })
      expect(task!.status).toBe("succeeded")
      expect(probes.calls.map((c) => c.input)).toEqual([{ value: "A" }, { value: "B" }])
      expect(Date.parse(task!.steps[0]!.started_at!)).toBeGreaterThanOrEqual(Date.parse(task!.steps[1]!.finished_at!))
    }))

  it.effect("rejects a $ref to a missing step before any tool runs", () =>
    Effect.gen(function*() {
      const { rejected } = yield* submit({
        steps: [
          { id: "a", tool: "probe.echo", input: { value: 1 } },
          { id: "b", tool: "probe.echo", input: { value: { $ref: "nope.output.x" } } }
        ]
      })
      expect(rejected).toMatchObject({ _tag: "InvalidRequest", code: "invalid_plan" })
      expect((rejected as any).message).toContain("unknown step \"nope\"")
      expect((rejected as any).details.field).toBe("input.steps.1.input.value")
      expect(probes.calls).toEqual([])
    }))

  it.effect("rejects a $ref to a path the tool's output cannot have before any tool runs", () =>
    Effect.gen(function*() {
      const { rejected } = yield* submit({
        steps: [
          { id: "a", tool: "probe.echo", input: { value: 1 } },
          { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output.nested.lst" } } }
        ]
      })
      expect(rejected).toMatchObject({ _tag: "InvalidRequest", code: "invalid_plan" })
      expect((rejected as any).message).toContain("\"lst\"")
      expect((rejected as any).message).toContain("list")
      expect(probes.calls).toEqual([])
    }))

  it.effect("fails a step whose $ref is missing from the actual output, without calling its tool", () =>
    Effect.gen(function*() {
      const { task } = yield* submit({
        steps: [
          { id: "a", tool: "probe.echo", input: { value: { x: 1 } } },
          { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output.value.y" } } }
        ]
      })
      expect(task!.status).toBe("failed")
      expect(task!.steps[1]).toMatchObject({ status: "failed", error: { code: "unresolved_ref" } })
      expect(probes.calls.map((c) => c.tool)).toEqual(["probe.echo"])
    }))

  it.effect("rejects a cycle in depends_on", () =>
    Effect.gen(function*() {
      const { rejected } = yield* submit({
        steps: [
          { id: "a", tool: "probe.echo", input: { value: 1 }, depends_on: ["c"] },
          { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output" } } },
          { id: "c", tool: "probe.echo", input: { value: 1 }, depends_on: ["b"] }
        ]
      })
      expect(rejected).toMatchObject({ _tag: "InvalidRequest", code: "invalid_plan" })
      expect((rejected as any).message).toMatch(/cycle: (a -> c -> b -> a|a -> b -> c -> a|c -> b -> a -> c)/)
      expect(probes.calls).toEqual([])
    }))

  it.effect("rejects unknown tools and tools outside the task's allowlist before any tool runs", () =>
    Effect.gen(function*() {
      const unknown = yield* submit({
        steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }, { id: "b", tool: "nope.tool" }]
      })
      expect(unknown.rejected).toMatchObject({ code: "unknown_tool", details: { field: "input.steps.1.tool" } })
      const disallowed = yield* submit(
        { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }, { id: "b", tool: "probe.fail" }] },
        { tools: ["probe.echo"] as any }
      )
      expect(disallowed.rejected).toMatchObject({ code: "tool_not_allowed", details: { field: "input.steps.1.tool" } })
      expect(probes.calls).toEqual([])
    }))

  it.effect("a failing step fails its dependants and leaves the other steps' results", () =>
    Effect.gen(function*() {
      const { task } = yield* submit({
        steps: [
          { id: "bad", tool: "probe.fail" },
          { id: "after_bad", tool: "probe.echo", input: { value: { $ref: "bad.output" } } },
          { id: "later", tool: "probe.echo", input: { value: 1 }, depends_on: ["after_bad"] },
          { id: "good", tool: "probe.echo", input: { value: "ok" } }
        ]
      })
      expect(task!.status).toBe("failed")
      expect(task!.error).toMatchObject({
        code: "step_failed",
        details: { failed_steps: ["bad", "after_bad", "later"] }
      })
      expect(task!.error!.message).toContain("upstream said no")
      const byId = Object.fromEntries(task!.steps.map((s: { id: string }) => [s.id, s]))
      expect(byId.bad).toMatchObject({
        status: "failed",
        error: { code: "tool_failed", details: { retryable: false, status: 400 } }
      })
      expect(byId.after_bad).toMatchObject({ status: "skipped", error: { code: "dependency_failed" } })
      expect(byId.later).toMatchObject({ status: "skipped", error: { code: "dependency_failed" } })
      expect(byId.good).toMatchObject({ status: "succeeded", output: { value: "ok" } })
      expect(probes.calls.map((c) => c.tool).sort()).toEqual(["probe.echo", "probe.fail"])
    }))

  it.effect("a tool input that violates the tool's schema is refused at submit, the step and field named", () =>
    Effect.gen(function*() {
      const { rejected, task } = yield* submit({
        steps: [
          { id: "ok", tool: "probe.echo", input: { value: 1 } },
          { id: "a", tool: "probe.echo", input: { valeu: 1 } }
        ]
      })
      expect(task).toBeUndefined()
      expect(rejected).toMatchObject({
        code: "invalid_tool_input",
        message: expect.stringContaining("step \"a\""),
        details: { field: expect.stringMatching(/^input\.steps\.1\.input/) }
      })
      expect(probes.calls).toEqual([])
    }))

  it.effect("an input known only once a $ref resolves is checked when the step runs, failing that step", () =>
    Effect.gen(function*() {
      const { task } = yield* submit({
        steps: [
          { id: "a", tool: "probe.echo", input: { value: 1 } },
          { id: "b", tool: "probe.effect", input: { label: { $ref: "a.output.value" } } }
        ]
      })
      expect(task!.steps[1]).toMatchObject({ status: "failed", error: { code: "invalid_tool_input" } })
      expect(probes.calls.map((c) => c.tool)).toEqual(["probe.echo"])
    }))

  it.effect("cancels a running task: running steps are interrupted, and a second cancel is a conflict", () =>
    Effect.gen(function*() {
      probes.reset()
      const accepted = yield* call("POST", "/v1/tasks", {
        input: { steps: [{ id: "h", tool: "probe.hang", input: {} }] },
        session_id: "cancel",
        mode: "async"
      })
      expect(accepted.status).toBe(202)
      const taskId = accepted.body.task_id
      // wait until the hanging tool is really running
      yield* probes.calledEffect("probe.hang")
      const cancelled = yield* call("POST", `/v1/tasks/${taskId}/cancel`)
      expect(cancelled.body.status).toBe("cancelled")
      expect(cancelled.body.steps[0].status).toBe("cancelled")
      const again = yield* call("POST", `/v1/tasks/${taskId}/cancel`)
      expect(again.status).toBe(409)
      expect(again.body.error.code).toBe("task_finished")
    }))

  it.effect("a repeated submit with the same idempotency key answers the same task without running it again", () =>
    Effect.gen(function*() {
      probes.reset()
      const request = {
        input: { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }] },
        session_id: "idem",
        idempotency_key: "once"
      }
      const first = yield* call("POST", "/v1/tasks", request)
      const second = yield* call("POST", "/v1/tasks", request)
      expect(second.body.task_id).toBe(first.body.task_id)
      expect(second.body.created_at).toBe(first.body.created_at)
      expect(second.body.status).toBe("succeeded")
      expect(probes.calls.length).toBe(1)
    }))
})
