import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { Conflict, Forbidden, NotFound } from "./Errors.js"
import type { Principal } from "./Principal.js"
import type { Step, Task } from "./Task.js"
import type { ToolSpec } from "./ToolDefinition.js"

/** Whether a call of the tool waits for a person's approval under `rules` (the tenant's and the task's). */
export const needsApproval = (spec: ToolSpec, rules: ReadonlyArray<string>): boolean =>
  spec.requires_approval === true || rules.includes(spec.tool_id) ||
  (spec.side_effect && rules.includes("*side_effect"))

/** The rules of a task: the tenant's, then the task's own additions (a task never asks for fewer). */
export const approvalRules = (
  tenant: ReadonlyArray<string> | undefined,
  task: ReadonlyArray<string> | undefined
): Array<string> => [...new Set([...(tenant ?? []), ...(task ?? [])])]

/** How long a call waits for its approval when the tenant did not say (`approval_timeout`). */
export const defaultApprovalTimeoutSeconds = 86_400

/**
 * Body of `POST /v1/tasks/{task_id}/steps/{step_id}/approve`: the hash the approver saw (from `approval.requested` or
 * the task), so the approval is of that exact call; optionally the input to run instead, checked against the
 * tool's schema.
 */
export const ApproveRequest = Schema.Struct({
  input_hash: Schema.String.pipe(
    Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "input_hash must be 64 hex digits" })
  ),
  input: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type ApproveRequest = typeof ApproveRequest.Type

/** Body of `POST /v1/tasks/{task_id}/steps/{step_id}/reject`: why, which the model of a natural-language task is told. */
export const RejectRequest = Schema.Struct({
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(2_000)))
})
export type RejectRequest = typeof RejectRequest.Type

/** A decision on a waiting call, as the edge hands it to the task's session. */
export const Decision = Schema.Union(
  Schema.TaggedStruct("Approve", ApproveRequest.fields),
  Schema.TaggedStruct("Reject", RejectRequest.fields)
)
export type Decision = typeof Decision.Type

/** Whether `principal` may decide on the task's calls: an admin of its tenant, or the user who submitted it. */
export const mayDecide = (task: Task, principal: Principal): boolean =>
  principal.role === "admin" || (task.user_id !== undefined && task.user_id === principal.userId)

/** A call waiting for approval, as `GET /v1/approvals` lists it. */
export const PendingApproval = Schema.Struct({
  task_id: Schema.String,
  session_id: Schema.String,
  step_id: Schema.String,
  tool: Schema.String,
  input: Schema.Unknown,
  input_hash: Schema.String,
  requested_at: Schema.String,
  expires_at: Schema.String,
  /** Who submitted the task (who may decide, besides an admin). */
  user_id: Schema.optional(Schema.String)
})
export type PendingApproval = typeof PendingApproval.Type

/** A page of `GET /v1/approvals`: oldest request first; `next_cursor` asks for the next page. */
export const ApprovalPage = Schema.Struct({
  approvals: Schema.Array(PendingApproval),
  next_cursor: Schema.optional(Schema.String)
})
export type ApprovalPage = typeof ApprovalPage.Type

/** Query of `GET /v1/approvals`: `status` is `pending` (the only one listed), `limit` 50 unless said. */
export const ApprovalQuery = Schema.Struct({
  status: Schema.optional(Schema.Literal("pending")),
  cursor: Schema.optional(Schema.String.pipe(Schema.maxLength(512))),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100)))
})

/**
 * The same decision recorded already, by the same person (the decision's message redelivered, or a client's retry):
 * it stands, and is answered again rather than refused.
 */
export const isRepeat = (step: Step, principal: Principal, decision: Decision): boolean =>
  step.approval?.decision === (decision._tag === "Approve" ? "approved" : "rejected") &&
  step.approval.decided_by === principal.userId &&
  (decision._tag === "Reject" || decision.input_hash === step.approval.input_hash || step.approval.edited === true)

/**
 * Whether a decision applies to the task: the step it names, once it is known to exist, that `principal` may decide,
 * that it waits for approval, and that an approval names the hash of the waiting call.
 */
export const checkDecision = (
  task: Task,
  stepId: string,
  principal: Principal,
  decision: Decision
): Either.Either<Step & { readonly approval: NonNullable<Step["approval"]> }, NotFound | Forbidden | Conflict> => {
  const step = task.steps.find((s) => s.id === stepId)
  if (step === undefined) return Either.left(new NotFound({ message: `task ${task.task_id} has no step ${stepId}` }))
  if (!mayDecide(task, principal)) {
    return Either.left(
      new Forbidden({ message: "only an admin or the user who submitted the task may approve or reject its calls" })
    )
  }
  if (step.status !== "waiting_approval" || step.approval === undefined) {
    return Either.left(
      new Conflict({
        code: "not_waiting",
        message: `step ${stepId} is not waiting for approval (it is ${step.status})`,
        details: { status: step.status, ...(step.approval?.decision ? { decision: step.approval.decision } : {}) }
      })
    )
  }
  if (decision._tag === "Approve" && decision.input_hash !== step.approval.input_hash) {
    return Either.left(
      new Conflict({
        code: "stale_input_hash",
        message: `the call of step ${stepId} is not the one approved: its input hash is ${step.approval.input_hash}`,
        details: { input_hash: step.approval.input_hash }
      })
    )
  }
  return Either.right({ ...step, approval: step.approval })
}
