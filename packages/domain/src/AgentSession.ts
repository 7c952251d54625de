import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as DeliverAt from "@effect/cluster/DeliverAt"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as DateTime from "effect/DateTime"
import * as PrimaryKey from "effect/PrimaryKey"
import * as Schema from "effect/Schema"
import { Decision } from "./Approval.js"
import { Conflict, Forbidden, InvalidRequest, NotFound, Unavailable } from "./Errors.js"
import { TaskId } from "./Ids.js"
import { Principal } from "./Principal.js"
import { OnUnknownOutcome } from "./Settings.js"
import { emptyUsage, SessionInfo, Task, TaskEvent, TaskRequest } from "./Task.js"
import { ToolSpec } from "./ToolDefinition.js"

/** The task cannot run as asked: a bad plan, an unknown tool, no LLM configured. */
export const SubmitError = Schema.Union(InvalidRequest, Conflict)

/** What reading a task can fail with: it does not exist (for this tenant), or its storage cannot be read now. */
export const ReadError = Schema.Union(NotFound, Unavailable)

/**
 * One tenant session: its context and its tasks. Entity id: `tenantId/sessionId`.
 *
 * `Submit` is persisted with the task id as primary key: once the cluster has stored it, the task is
 * accepted and will run even if every runner dies, and a repeated submit (same idempotency key, so same
 * task id) answers the stored task. The edge validates the request before it submits. A sync task runs in its
 * submit, which answers it once it ended or waits for a decision; an async one is recorded and answered at once,
 * and runs from a `Run`. It is uninterruptible from the edge, which may stop waiting for the answer without
 * undoing anything.
 */
/** What the edge submits for a task, once it checked it. */
export const SubmitPayload = Schema.Struct({
  task_id: TaskId,
  request: TaskRequest,
  principal: Principal,
  /** The LLMs to use, in order: the task's or tenant's default, then the tenant's fallbacks. */
  llms: Schema.Array(Schema.String),
  /** The specs of a plan's tools, as the edge checked the plan against them. */
  specs: Schema.optional(Schema.Array(ToolSpec)),
  /** The tenant's `on_unknown_outcome` when the task was accepted. */
  on_unknown_outcome: Schema.optional(OnUnknownOutcome),
  /** When the edge accepted the task: its `created_at`, the same in every answer. */
  accepted_at: Schema.String,
  /** The calls that wait for approval: the tenant's rules and the task's own. */
  approval_required: Schema.optional(Schema.Array(Schema.String)),
  /** How long a call waits for its approval, in ms (the tenant's `approval_timeout`). */
  approval_timeout_ms: Schema.optional(Schema.Int),
  /** How long a call waits for a missing connection, in ms (the tenant's `connection_timeout`; 0: it does not). */
  connection_timeout_ms: Schema.optional(Schema.Int),
  /** The OAuth2 callback URL as the edge that accepted the task is reached: where a consent asked by the task returns. */
  oauth_redirect_uri: Schema.optional(Schema.String)
})
export type SubmitPayload = typeof SubmitPayload.Type

/**
 * A call's approval deadline, sent by the session to itself when the call starts waiting: the cluster's storage
 * delivers it at `at` (epoch ms), and a call still undecided then expires.
 */
export class ExpireApproval extends Schema.Class<ExpireApproval>("@altan/domain/ExpireApproval")({
  task_id: TaskId,
  step_id: Schema.String,
  at: Schema.Number
}) {
  [PrimaryKey.symbol]() {
    return `${this.task_id}/${this.step_id}`
  }
  [DeliverAt.symbol]() {
    return DateTime.unsafeMake(this.at)
  }
}

/**
 * The deadline of a call's wait for its connection, sent by the session to itself when the call starts waiting
 * (`since`, epoch ms, tells one wait of the step from a later one): delivered at `at`, it fails the task with
 * `connection_required` if that wait is still on.
 */
export class ExpireConnectionWait extends Schema.Class<ExpireConnectionWait>("@altan/domain/ExpireConnectionWait")({
  task_id: TaskId,
  step_id: Schema.String,
  since: Schema.String,
  at: Schema.Number
}) {
  [PrimaryKey.symbol]() {
    return `${this.task_id}/${this.step_id}/${this.since}`
  }
  [DeliverAt.symbol]() {
    return DateTime.unsafeMake(this.at)
  }
}

/**
 * When a spent budget resets, for a call (or the model's turn, `step_id` `llm`) waiting since `since`: sent by the
 * session to itself when the wait starts, delivered at `at`, it makes the task look again if that wait is still on.
 * Its key names its time too: one per wait and time.
 */
export class ResumeAt extends Schema.Class<ResumeAt>("@altan/domain/ResumeAt")({
  task_id: TaskId,
  step_id: Schema.String,
  since: Schema.String,
  at: Schema.Number
}) {
  [PrimaryKey.symbol]() {
    return `${this.task_id}/${this.step_id}/${this.since}/${this.at}`
  }
  [DeliverAt.symbol]() {
    return DateTime.unsafeMake(this.at)
  }
}

export const AgentSession = Entity.make("AgentSession", [
  Rpc.make("Submit", {
    payload: SubmitPayload.fields,
    success: Task,
    error: SubmitError,
    primaryKey: (p) => p.task_id
  }).annotate(ClusterSchema.Persisted, true).annotate(ClusterSchema.Uninterruptible, "client"),
  /**
   * Runs an accepted task to its end; sent by the session to itself so execution is durable too. It never
   * fails: whatever happens ends up recorded on the task. It carries the submit, so a run whose task record was
   * lost (Redis dropped its last second, and the session moved) records the task again and runs it.
   */
  Rpc.make("Run", {
    payload: {
      task_id: TaskId,
      submit: Schema.optional(SubmitPayload),
      /**
       * Sent again after the task waited: what it waited for (a step's decision, or `<step>@<since>#<notice>` for a
       * wait on a connection or a budget woken by a notice), so each wake is its own message.
       */
      after: Schema.optional(Schema.String)
    },
    primaryKey: (p) => (p.after === undefined ? p.task_id : `${p.task_id}/${p.after}`)
  }).annotate(ClusterSchema.Persisted, true),
  /**
   * A person's decision on a call waiting for approval. Persisted: once stored, the decision is recorded and the task
   * goes on, also if the runner dies right after; a repeat (same decider, decision and hash) answers the same.
   * `Forbidden` for anyone but an admin or the task's submitter; `Conflict` for a call that no longer waits, or whose
   * input hash is not the one given; `InvalidRequest` for an edited input the tool refuses.
   */
  Rpc.make("Decide", {
    payload: {
      task_id: TaskId,
      step_id: Schema.String,
      principal: Principal,
      decision: Decision
    },
    success: Task,
    error: Schema.Union(NotFound, Forbidden, Conflict, InvalidRequest, Unavailable),
    primaryKey: (p) =>
      `${p.task_id}/${p.step_id}/${p.principal.userId}/${
        p.decision._tag === "Approve" ? `approve/${p.decision.input_hash}` : "reject"
      }`
  }).annotate(ClusterSchema.Persisted, true).annotate(ClusterSchema.Uninterruptible, "client"),
  /** The task as durably recorded; with `wait_ms`, waits up to that long for it to finish. */
  Rpc.make("ExpireApproval", { payload: ExpireApproval }).annotate(ClusterSchema.Persisted, true),
  Rpc.make("ExpireConnectionWait", { payload: ExpireConnectionWait }).annotate(ClusterSchema.Persisted, true),
  Rpc.make("ResumeAt", { payload: ResumeAt }).annotate(ClusterSchema.Persisted, true),
  Rpc.make("GetTask", {
    payload: { task_id: TaskId, wait_ms: Schema.optional(Schema.Int) },
    success: Task,
    error: ReadError
  }),
  /** The task's events after `after` (a `Last-Event-ID`), then live ones; ends after the terminal event. */
  Rpc.make("Events", {
    payload: { task_id: TaskId, after: Schema.optional(Schema.String) },
    success: TaskEvent,
    error: ReadError,
    stream: true
  }),
  Rpc.make("Cancel", {
    payload: { task_id: TaskId },
    success: Task,
    error: Schema.Union(NotFound, Conflict, Unavailable)
  }),
  Rpc.make("GetSession", { success: SessionInfo, error: ReadError }),
  Rpc.make("Reset", { error: Unavailable })
]).annotate(ClusterSchema.ShardGroup, () => "agent")

/**
 * The task a submit creates, as it stands when accepted: the session records exactly this, and the edge answers
 * it when the session is slow to (the task is accepted once the submit is stored).
 */
export const acceptedTask = (payload: {
  readonly task_id: TaskId
  readonly request: TaskRequest
  readonly principal: Principal
  readonly llms: ReadonlyArray<string>
  readonly accepted_at: string
  readonly approval_required?: ReadonlyArray<string> | undefined
}): Task => {
  const { request } = payload
  return {
    task_id: payload.task_id,
    session_id: payload.task_id.slice(0, payload.task_id.lastIndexOf(".")) as Task["session_id"],
    status: "queued",
    input: request.input,
    steps: typeof request.input === "string"
      ? []
      : request.input.steps.map((s) => ({ id: s.id, tool: s.tool, status: "pending" as const, attempts: 0 })),
    usage: emptyUsage,
    ...(payload.llms.length > 0 ? { llm_id: payload.llms[0]!, llms: payload.llms } : {}),
    ...(request.max_steps ? { max_steps: request.max_steps } : {}),
    ...(request.tools ? { tools: request.tools } : {}),
    ...(request.idempotency_key ? { idempotency_key: request.idempotency_key } : {}),
    mode: request.mode,
    timeout_ms: request.timeout_ms,
    user_id: payload.principal.userId,
    ...(payload.approval_required && payload.approval_required.length > 0
      ? { approval_required: payload.approval_required }
      : {}),
    created_at: payload.accepted_at,
    updated_at: payload.accepted_at
  }
}
