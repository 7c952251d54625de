import type { TaskId } from "@altan/domain/Ids"
import * as PlanGraph from "@altan/domain/PlanGraph"
import { isWaiting, type Plan, type Task, waitingFor, withoutWaiting } from "@altan/domain/Task"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberId from "effect/FiberId"
import { waitingEvent } from "./SessionTasks.js"
import { runStep, type StepContext, StepFailed, StepWaiting } from "./StepRunner.js"

/**
 * Runs a structured task: every step as soon as the steps it depends on succeeded (at most the context's limit of
 * tool calls at once), a step whose dependency did not succeed is skipped. A resumed task keeps what its steps
 * already recorded: succeeded steps give their outputs, a step that was running asks again for its attempt.
 * A step waiting for approval holds back the steps that depend on it (they stay pending); the others go on. Ends
 * the task: `succeeded` with the last step's output, `failed` naming the first step that did not succeed
 * (`unknown_outcome` when one's outcome is unknown, `approval_rejected` when a call was rejected), or `waiting` when
 * nothing failed and some calls wait for a decision or a connection (the task goes on when that comes).
 */
export const runPlan = (loop: StepContext, taskId: TaskId): Effect.Effect<Task> =>
  Effect.gen(function*() {
    const record = loop.tasks.current(taskId)
    const plan = record.task.input as Plan
    const lastStep = plan.steps.at(-1)?.id
    // the write of the last step to succeed ends the task, succeeded with the last step's output (as below)
    const ctx: StepContext = {
      ...loop,
      afterSuccess: (task) =>
        task.steps.every((s) => s.status === "succeeded")
          ? {
            ...withoutWaiting(task),
            status: "succeeded",
            output: task.steps.find((s) => s.id === lastStep)?.output
          }
          : task
    }
    const checked = PlanGraph.validate(plan)
    if (Either.isLeft(checked)) {
      const e = checked.left
      return yield* ctx.tasks.updateTask(taskId, (t) => ({
        ...t,
        status: "failed",
        error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }
      }))
    }
    const graph = checked.right
    const specs = new Map((record.specs ?? []).map((spec) => [spec.tool_id as string, spec]))
    const done = new Map(
      plan.steps.map((s) => [s.id, Deferred.unsafeMake<unknown, StepFailed | StepWaiting>(FiberId.none)])
    )
    const outputs = new Map<string, unknown>()
    const fail = (stepId: string, status: "failed" | "skipped", error: { code: string; message: string }) =>
      Effect.zipRight(
        ctx.tasks.updateStep(taskId, stepId, (s) => ({ ...s, status, error })),
        Effect.fail(new StepFailed(stepId))
      )

    // every step in a fiber of its own, but a one-step plan's, which runs in this one
    yield* Effect.forEach(plan.steps, (step) =>
      Effect.gen(function*() {
        const deps = graph.deps.get(step.id) ?? []
        const results = yield* Effect.forEach(deps, (d) => Deferred.await(done.get(d)!).pipe(Effect.either))
        const failedDep = results.findIndex((r) => Either.isLeft(r) && r.left._tag === "StepFailed")
        const recorded = ctx.tasks.current(taskId).task.steps.find((s) => s.id === step.id)!
        if (recorded.status === "succeeded") {
          outputs.set(step.id, recorded.output)
          return recorded.output
        }
        if (recorded.status === "waiting_approval") return yield* Effect.fail(new StepWaiting(step.id))
        // a call waiting for a connection or a budget looks again (see `runStep`)
        if (
          recorded.status !== "pending" && recorded.status !== "running" && recorded.status !== "waiting_connection" &&
          recorded.status !== "waiting_budget"
        ) {
          return yield* Effect.fail(new StepFailed(step.id))
        }
        // a dependency waits for a decision: so does this step, still pending
        if (failedDep < 0 && results.some(Either.isLeft)) return yield* Effect.fail(new StepWaiting(step.id))
        if (failedDep >= 0) {
          return yield* fail(step.id, "skipped", {
            code: "dependency_failed",
            message: `step "${deps[failedDep]}" did not succeed`
          })
        }
        const spec = specs.get(step.tool)
        if (spec === undefined) {
          return yield* fail(step.id, "failed", { code: "unknown_tool", message: `unknown tool ${step.tool}` })
        }
        const input = PlanGraph.resolve(step.input, outputs)
        if (Either.isLeft(input)) {
          return yield* fail(step.id, "failed", {
            code: "unresolved_ref",
            message: `$ref "${input.left.ref}": ${input.left.reason}`
          })
        }
        const output = yield* runStep(ctx, taskId, step.id, spec, input.right)
        outputs.set(step.id, output)
        return output
      }).pipe(
        // a bug in running one step fails that step, with its message, and the others go on
        Effect.catchAllDefect((defect) =>
          Effect.zipRight(
            Effect.logError(`step ${step.id} of task ${taskId} failed on a defect`, Cause.die(defect)),
            fail(step.id, "failed", {
              code: "internal_error",
              message: `the step stopped on an internal error: ${
                defect instanceof Error ? defect.message : String(defect)
              }`
            })
          )
        ),
        Effect.exit,
        Effect.flatMap((exit) => Deferred.done(done.get(step.id)!, exit))
      ), { concurrency: plan.steps.length > 1 ? "unbounded" : 1, discard: true })

    const steps = ctx.tasks.current(taskId).task.steps
    const notDone = steps.filter((s) => s.status !== "succeeded")
    if (notDone.length === 0) {
      return yield* ctx.tasks.updateTask(taskId, (t) => ({
        ...withoutWaiting(t),
        status: "succeeded",
        output: outputs.get(plan.steps[plan.steps.length - 1]!.id)
      }))
    }
    const ended = notDone.filter((s) => s.status !== "pending" && !isWaiting(s.status))
    if (ended.length === 0) {
      // nothing failed: the task waits for the decisions its calls need
      return yield* ctx.tasks.updateTask(
        taskId,
        (t) => ({ ...t, status: "waiting", waiting_for: waitingFor(t) }),
        waitingEvent
      )
    }
    const unknown = notDone.find((s) => s.status === "unknown_outcome")
    const rejected = notDone.find((s) => s.status === "rejected")
    const first = unknown ?? rejected ?? notDone.find((s) => s.status === "failed") ?? notDone[0]!
    return yield* ctx.tasks.updateTask(taskId, (t) => ({
      ...withoutWaiting(t),
      status: "failed",
      // calls that waited for a decision will not be made: the task ended without them
      steps: t.steps.map((s) => (isWaiting(s.status) ? { ...s, status: "cancelled" as const } : s)),
      error: {
        code: unknown
          ? "unknown_outcome"
          : rejected
          ? "approval_rejected"
          // a missing connection the tenant does not wait for (`connection_timeout: 0`) is named as such
          : first.error?.code === "connection_required"
          ? "connection_required"
          : "step_failed",
        message: unknown
          ? `step "${first.id}" (${first.tool}) has an unknown outcome: ${first.error?.message ?? "it was cut off"}`
          : rejected
          ? `step "${first.id}" (${first.tool}) was rejected: ${first.error?.message ?? "no reason given"}`
          : `step "${first.id}" (${first.tool}) failed: ${first.error?.message ?? "unknown error"}`,
        details: {
          failed_steps: notDone.map((s) => s.id),
          ...(unknown ? { unknown_steps: notDone.filter((s) => s.status === "unknown_outcome").map((s) => s.id) } : {})
        }
      }
    }))
  })
