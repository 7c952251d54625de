import { checkDecision, type Decision } from "@altan/domain/Approval"
import type { Conflict, Forbidden, NotFound } from "@altan/domain/Errors"
import type { TaskId } from "@altan/domain/Ids"
import { canonicalJson } from "@altan/domain/Json"
import type { Principal } from "@altan/domain/Principal"
import { type Step, type Task, waitEnded, waitingFor } from "@altan/domain/Task"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { createHash } from "node:crypto"
import type { SessionTasks } from "./SessionTasks.js"

/** What an approval is bound to: SHA-256 (hex) of the canonical JSON of `{"tool", "input"}`. */
export const inputHash = (tool: string, input: unknown): string =>
  createHash("sha256").update(canonicalJson({ tool, input })).digest("hex")

/**
 * Puts a call on hold for a person's decision: the step waits (`waiting_approval`) with the hash of its tool and
 * input and when it expires, and `approval.requested` tells whoever follows the task what to decide.
 */
export const ask = (
  tasks: SessionTasks,
  taskId: TaskId,
  stepId: string,
  spec: ToolSpec,
  input: unknown,
  timeoutMs: number
) =>
  Effect.gen(function*() {
    const nowMs = yield* Clock.currentTimeMillis
    const approval = {
      input_hash: inputHash(spec.tool_id, input),
      requested_at: new Date(nowMs).toISOString(),
      expires_at: new Date(nowMs + timeoutMs).toISOString()
    }
    yield* tasks.updateStep(taskId, stepId, (s) => ({ ...s, status: "waiting_approval", input, approval }), {
      type: "approval.requested",
      step_id: stepId,
      data: { step_id: stepId, tool: spec.tool_id, input, ...approval }
    })
    return approval
  })

/**
 * The task with a decision on one of its waiting calls applied, or why it cannot be (`checkDecision`). An edited
 * input was checked against the tool's schema before.
 */
export const decide = (
  task: Task,
  stepId: string,
  principal: Principal,
  decision: Decision,
  at: string
): Either.Either<Task, NotFound | Forbidden | Conflict> => {
  const checked = checkDecision(task, stepId, principal, decision)
  if (Either.isLeft(checked)) return Either.left(checked.left)
  const step = checked.right
  const decided = { decided_by: principal.userId, decided_at: at }
  let next: Step
  if (decision._tag === "Approve") {
    const edited = decision.input !== undefined
    next = {
      ...step,
      status: "pending",
      ...(edited ? { input: decision.input } : {}),
      approval: {
        ...step.approval,
        ...decided,
        decision: "approved",
        ...(edited ? { input_hash: inputHash(step.tool, decision.input), edited: true } : {})
      }
    }
  } else {
    next = {
      ...step,
      status: "rejected",
      error: {
        code: "approval_rejected",
        message: `the call was rejected by ${principal.userId}${decision.reason ? `: ${decision.reason}` : ""}`
      },
      approval: {
        ...step.approval,
        ...decided,
        decision: "rejected",
        ...(decision.reason ? { reason: decision.reason } : {})
      }
    }
  }
  const steps = task.steps.map((s) => (s.id === stepId ? next : s))
  const updated: Task = { ...task, steps }
  const waiting = waitingFor(updated)
  const { waiting_for: _, ...rest } = updated
  return Either.right(waiting.length > 0 ? { ...rest, waiting_for: waiting } : rest)
}

/** A call that waited past its `expires_at`: expired, and the task fails with `approval_expired`. */
export const expire = (task: Task, stepId: string): Task => {
  const step = task.steps.find((s) => s.id === stepId)!
  const error = {
    code: "approval_expired",
    message: `step "${stepId}" (${step.tool}) was not approved by ${step.approval?.expires_at ?? "its deadline"}`
  }
  return waitEnded(task, stepId, "expired", error)
}
