import * as Schema from "effect/Schema"
import { BudgetName, BudgetWait } from "./Budget.js"
import { ErrorBody } from "./Errors.js"
import { SessionId, TaskId, ToolId } from "./Ids.js"
import { LlmAttempt } from "./Llm.js"

/** A plan step id: referenced by `depends_on` and `{"$ref": "<step>.output.<path>"}`. */
export const StepId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9_-]{1,64}$/, { message: () => "step id must be 1-64 letters, digits, _ or -" })
)

/** A JSON object of tool arguments; any value may be `{"$ref": "<step>.output.<path>"}`. */
export const StepInput = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** One step of a structured plan. */
export const PlanStep = Schema.Struct({
  id: StepId,
  tool: ToolId,
  input: Schema.optionalWith(StepInput, { default: () => ({}) }),
  depends_on: Schema.optional(Schema.Array(StepId))
})
export type PlanStep = typeof PlanStep.Type

/** A structured task: a DAG of tool calls that skips the LLM. */
export const Plan = Schema.Struct({
  steps: Schema.Array(PlanStep).pipe(Schema.minItems(1), Schema.maxItems(100))
})
export type Plan = typeof Plan.Type

/** Natural-language text for the agent loop, or a structured plan. */
export const TaskInput = Schema.Union(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100_000)), Plan)
export type TaskInput = typeof TaskInput.Type

export const TaskMode = Schema.Literal("sync", "async")
export type TaskMode = typeof TaskMode.Type

/**
 * Which tool calls wait for a person's approval: a tool id, or `*side_effect` for every tool with side effects.
 * A task's rules are the tenant's (`approval_required` in settings) plus its own: never fewer.
 */
export const ApprovalRule = Schema.Union(ToolId, Schema.Literal("*side_effect"))
export type ApprovalRule = typeof ApprovalRule.Type

/** Body of `POST /v1/tasks`. */
export const TaskRequest = Schema.Struct({
  session_id: Schema.optional(SessionId),
  input: TaskInput,
  llm_id: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128))),
  tools: Schema.optional(Schema.Array(ToolId).pipe(Schema.maxItems(256))),
  mode: Schema.optionalWith(TaskMode, { default: () => "sync" as const }),
  timeout_ms: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 15 * 60_000)), { default: () => 30_000 }),
  idempotency_key: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256))),
  max_steps: Schema.optional(Schema.Int.pipe(Schema.between(1, 50))),
  /** More calls to approve than the tenant's settings ask for. */
  approval_required: Schema.optional(Schema.Array(ApprovalRule).pipe(Schema.maxItems(256)))
}).annotations({
  identifier: "TaskRequest",
  // a misspelt field (`inputs`) is named in the 400, not silently dropped
  parseOptions: { onExcessProperty: "error" }
})
export type TaskRequest = typeof TaskRequest.Type

/** `waiting`: a step waits for something outside the task (see `waiting_for`); nothing of it runs meanwhile. */
export const TaskStatus = Schema.Literal("queued", "running", "waiting", "succeeded", "failed", "cancelled")
export type TaskStatus = typeof TaskStatus.Type

export const isTerminal = (status: TaskStatus): boolean =>
  status === "succeeded" || status === "failed" || status === "cancelled"

/**
 * `waiting_approval`: the call waits for a person to approve or reject it; `rejected`: they did not; `expired`: no one
 * decided within the tenant's `approval_timeout`. `waiting_connection`: the call needs the tenant's connection to its
 * provider, missing or to be authorized again; it runs once the connection is there (see `connection`).
 * `waiting_budget`: one of the tenant's spend budgets is used up; the call is made once it resets or is raised.
 * `unknown_outcome`: the step's call with side effects was started but its outcome was never learnt (the
 * process running it died mid-call), and calling again could apply it twice; the task fails naming the step.
 */
export const StepStatus = Schema.Literal(
  "pending",
  "running",
  "succeeded",
  "failed",
  "skipped",
  "cancelled",
  "unknown_outcome",
  "waiting_approval",
  "waiting_connection",
  "waiting_budget",
  "rejected",
  "expired"
)
export type StepStatus = typeof StepStatus.Type

/** The statuses of a step that waits for something outside its task: nothing of it runs meanwhile. */
export const isWaiting = (status: StepStatus): boolean =>
  status === "waiting_approval" || status === "waiting_connection" || status === "waiting_budget"

/** What went wrong with a task or step, as recorded on it: the same shape as an API error. */
export const TaskError = ErrorBody
export type TaskError = typeof TaskError.Type

/**
 * A call's approval: asked for the call whose tool and input hash to `input_hash` (SHA-256 hex of the canonical JSON
 * of `{"tool", "input"}`), then decided (by `decided_by`, a user id) or expired.
 */
export const StepApproval = Schema.Struct({
  input_hash: Schema.String,
  requested_at: Schema.String,
  expires_at: Schema.String,
  decision: Schema.optional(Schema.Literal("approved", "rejected")),
  decided_by: Schema.optional(Schema.String),
  decided_at: Schema.optional(Schema.String),
  /** Why it was rejected, as the decider said. */
  reason: Schema.optional(Schema.String),
  /** The approver changed the call's input: the step ran with the edited one (`input`), hashed as `input_hash`. */
  edited: Schema.optional(Schema.Boolean)
}).annotations({ identifier: "StepApproval" })
export type StepApproval = typeof StepApproval.Type

/**
 * A call's wait for the tenant's connection to its provider (`waiting_connection`): why (`missing`, `needs_reauth`),
 * since when, until when (the tenant's `connection_timeout`; the task then fails with `connection_required`), and
 * where a person consents (`authorize_url`, a single-use authorization, when the provider's OAuth2 app is configured).
 */
export const StepConnection = Schema.Struct({
  provider: Schema.String,
  reason: Schema.Literal("missing", "needs_reauth"),
  requested_at: Schema.String,
  expires_at: Schema.String,
  authorize_url: Schema.optional(Schema.String)
}).annotations({ identifier: "StepConnection" })
export type StepConnection = typeof StepConnection.Type

/**
 * What a waiting task waits for, one entry per waiting step (or `llm.<turn>`, the model's next turn): a decision
 * (`approval`: `input_hash`), a connection (`connection`: `provider`, `reason`, `authorize_url`) or a spent budget
 * (`budget`: `budget`, `resets_at`).
 */
export const WaitingFor = Schema.Struct({
  step_id: Schema.String,
  kind: Schema.Literal("approval", "connection", "budget"),
  tool: Schema.String,
  input_hash: Schema.optional(Schema.String),
  provider: Schema.optional(Schema.String),
  reason: Schema.optional(Schema.Literal("missing", "needs_reauth")),
  authorize_url: Schema.optional(Schema.String),
  budget: Schema.optional(BudgetName),
  resets_at: Schema.optional(Schema.String),
  expires_at: Schema.optional(Schema.String)
}).annotations({ identifier: "WaitingFor" })
export type WaitingFor = typeof WaitingFor.Type

/** One tool call of a task, with its outcome and timing. */
export const Step = Schema.Struct({
  id: Schema.String,
  tool: Schema.String,
  status: StepStatus,
  input: Schema.optional(Schema.Unknown),
  output: Schema.optional(Schema.Unknown),
  error: Schema.optional(TaskError),
  attempts: Schema.Int,
  /** The error of the last failed attempt, when the step was retried. */
  last_error: Schema.optional(Schema.String),
  cached: Schema.optional(Schema.Boolean),
  /** The fallback tool that answered for this step's tool. */
  served_by: Schema.optional(Schema.String),
  started_at: Schema.optional(Schema.String),
  finished_at: Schema.optional(Schema.String),
  duration_ms: Schema.optional(Schema.Number),
  approval: Schema.optional(StepApproval),
  /** While (or after) the call waited for the tenant's connection: the last such wait. */
  connection: Schema.optional(StepConnection),
  /** While (or after) the call waited for a spent budget: the last such wait. */
  budget: Schema.optional(BudgetWait)
}).annotations({ identifier: "Step" })
export type Step = typeof Step.Type

export const Usage = Schema.Struct({
  llm_calls: Schema.Int,
  tool_calls: Schema.Int,
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int
}).annotations({ identifier: "Usage" })
export type Usage = typeof Usage.Type

export const emptyUsage: Usage = { llm_calls: 0, tool_calls: 0, prompt_tokens: 0, completion_tokens: 0 }

/** One LLM turn of a natural-language task: which model answered, after which attempts, asking for which tools. */
export const Turn = Schema.Struct({
  llm_id: Schema.String,
  attempts: Schema.Array(LlmAttempt),
  tool_calls: Schema.Array(Schema.String),
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int,
  finished_at: Schema.String
}).annotations({ identifier: "Turn" })
export type Turn = typeof Turn.Type

/** A task as the API returns it. */
export const Task = Schema.Struct({
  task_id: TaskId,
  session_id: SessionId,
  status: TaskStatus,
  input: TaskInput,
  output: Schema.optional(Schema.Unknown),
  error: Schema.optional(TaskError),
  steps: Schema.Array(Step),
  turns: Schema.optional(Schema.Array(Turn)),
  usage: Usage,
  llm_id: Schema.optional(Schema.String),
  /** The LLMs this task may use, in order (natural-language tasks). */
  llms: Schema.optional(Schema.Array(Schema.String)),
  max_steps: Schema.optional(Schema.Int),
  tools: Schema.optional(Schema.Array(Schema.String)),
  idempotency_key: Schema.optional(Schema.String),
  /** `sync` tasks have a caller waiting until `timeout_ms`; their tool calls go first when budgets are short. */
  mode: Schema.optional(TaskMode),
  timeout_ms: Schema.optional(Schema.Int),
  /** The `sub` of the token that submitted it. */
  user_id: Schema.optional(Schema.String),
  /** The calls of this task that wait for approval: the tenant's rules and the task's own. */
  approval_required: Schema.optional(Schema.Array(Schema.String)),
  /** While `waiting`: what for. */
  waiting_for: Schema.optional(Schema.Array(WaitingFor)),
  /** While (or after) the model's turn `turn` waited for a spent LLM budget: the last such wait. */
  budget_wait: Schema.optional(Schema.Struct({ ...BudgetWait.fields, turn: Schema.Int, llm_id: Schema.String })),
  created_at: Schema.String,
  updated_at: Schema.String
}).annotations({ identifier: "Task" })
export type Task = typeof Task.Type

/** A task as `GET /v1/tasks` lists it: what it is and how it stands, without its inputs, outputs and steps. */
export const TaskSummary = Schema.Struct({
  task_id: TaskId,
  session_id: SessionId,
  status: TaskStatus,
  mode: Schema.optional(TaskMode),
  /** `plan` (structured) or `text` (natural language). */
  kind: Schema.Literal("plan", "text"),
  user_id: Schema.optional(Schema.String),
  error: Schema.optional(TaskError),
  step_count: Schema.Int,
  usage: Usage,
  created_at: Schema.String,
  updated_at: Schema.String
}).annotations({ identifier: "TaskSummary" })
export type TaskSummary = typeof TaskSummary.Type

export const summaryOf = (task: Task): TaskSummary => ({
  task_id: task.task_id,
  session_id: task.session_id,
  status: task.status,
  ...(task.mode ? { mode: task.mode } : {}),
  kind: typeof task.input === "string" ? "text" : "plan",
  ...(task.user_id ? { user_id: task.user_id } : {}),
  ...(task.error ? { error: task.error } : {}),
  step_count: task.steps.length,
  usage: task.usage,
  created_at: task.created_at,
  updated_at: task.updated_at
})

/** `GET /v1/tasks`: newest first; `cursor` is the previous page's `next_cursor`. */
export const TaskQuery = Schema.Struct({
  session_id: Schema.optional(SessionId),
  status: Schema.optional(TaskStatus),
  cursor: Schema.optional(Schema.String.pipe(Schema.maxLength(512))),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100)))
})

export const TaskPage = Schema.Struct({
  tasks: Schema.Array(TaskSummary),
  /** Present when there may be more: pass it as `cursor`. */
  next_cursor: Schema.optional(Schema.String)
}).annotations({ identifier: "TaskPage" })
export type TaskPage = typeof TaskPage.Type

/** The task without `waiting_for`: it no longer waits. */
export const withoutWaiting = (task: Task): Task => {
  const { waiting_for: _, ...rest } = task
  return rest
}

/** The steps of a task that wait, as `waiting_for` lists them. */
/** Whether the model's turn waits for a spent budget now: the wait is for a turn not taken yet, of a task not ended. */
export const llmTurnWaits = (task: Task): boolean =>
  task.budget_wait !== undefined && !isTerminal(task.status) && (task.turns?.length ?? 0) < task.budget_wait.turn

export const waitingFor = (task: Task): Array<WaitingFor> => [
  ...(task.budget_wait && llmTurnWaits(task)
    ? [{
      step_id: `llm.${task.budget_wait.turn}`,
      kind: "budget" as const,
      tool: `llm:${task.budget_wait.llm_id}`,
      budget: task.budget_wait.budget,
      resets_at: task.budget_wait.resets_at
    }]
    : []),
  ...task.steps.flatMap((s): Array<WaitingFor> =>
    s.status === "waiting_approval"
      ? [{
        step_id: s.id,
        kind: "approval",
        tool: s.tool,
        ...(s.approval ? { input_hash: s.approval.input_hash, expires_at: s.approval.expires_at } : {})
      }]
      : s.status === "waiting_budget" && s.budget
      ? [{
        step_id: s.id,
        kind: "budget",
        tool: s.tool,
        budget: s.budget.budget,
        resets_at: s.budget.resets_at
      }]
      : s.status === "waiting_connection" && s.connection
      ? [{
        step_id: s.id,
        kind: "connection",
        tool: s.tool,
        provider: s.connection.provider,
        reason: s.connection.reason,
        ...(s.connection.authorize_url ? { authorize_url: s.connection.authorize_url } : {}),
        expires_at: s.connection.expires_at
      }]
      : []
  )
]

/**
 * A call that waited for its connection past its `expires_at` (the tenant's `connection_timeout`): the task fails with
 * `connection_required`, and its calls still pending or waiting are not made.
 */
export const connectionExpired = (task: Task, stepId: string): Task => {
  const step = task.steps.find((s) => s.id === stepId)!
  const wait = step.connection
  const error = {
    code: "connection_required",
    message: `step "${stepId}" (${step.tool}) waited for the tenant's ${wait?.provider ?? "provider"} connection ` +
      `until ${wait?.expires_at ?? "its deadline"}; it was not ${
        wait?.reason === "needs_reauth" ? "authorized again" : "connected"
      } in time`,
    details: {
      step_id: stepId,
      ...(wait ? { provider: wait.provider, reason: wait.reason } : {})
    }
  }
  return waitEnded(task, stepId, "failed", error)
}

/**
 * A task whose step `stepId` waited past its deadline: the step ends `status` with `error`, the task fails with it,
 * and its calls still pending or waiting are not made.
 */
export const waitEnded = (task: Task, stepId: string, status: "failed" | "expired", error: TaskError): Task => {
  const { waiting_for: _, ...rest } = task
  return {
    ...rest,
    status: "failed",
    error,
    steps: task.steps.map((s) =>
      s.id === stepId
        ? { ...s, status, error }
        : isWaiting(s.status) || s.status === "pending"
        ? { ...s, status: "cancelled" as const }
        : s
    )
  }
}

export const TaskEventType = Schema.Literal(
  "task.queued",
  "task.started",
  "llm.completed",
  "tool.started",
  "tool.completed",
  "tool.failed",
  "approval.requested",
  "approval.decided",
  "connection.required",
  "budget.exhausted",
  "task.waiting",
  "task.succeeded",
  "task.failed",
  "task.cancelled"
)
export type TaskEventType = typeof TaskEventType.Type

/** A progress event of a task; `id` orders events and resumes a stream (`Last-Event-ID`). */
export const TaskEvent = Schema.Struct({
  id: Schema.String,
  type: TaskEventType,
  task_id: TaskId,
  at: Schema.String,
  step_id: Schema.optional(Schema.String),
  data: Schema.optional(Schema.Unknown)
}).annotations({ identifier: "TaskEvent" })
export type TaskEvent = typeof TaskEvent.Type

/** `GET /v1/sessions/{id}`. */
export const SessionInfo = Schema.Struct({
  session_id: SessionId,
  task_ids: Schema.Array(TaskId),
  message_count: Schema.Int,
  updated_at: Schema.String
})
export type SessionInfo = typeof SessionInfo.Type
