import { defaultApprovalTimeoutSeconds, needsApproval } from "@altan/domain/Approval"
import type { BudgetName } from "@altan/domain/Budget"
import type { BudgetWait } from "@altan/domain/Budget"
import {
  BudgetExhausted,
  type Connection,
  ConnectionRequired,
  RateLimited,
  UpstreamUnavailable
} from "@altan/domain/Connection"
import { isClusterError } from "@altan/domain/EntityCall"
import { Unavailable } from "@altan/domain/Errors"
import type { TaskId, TenantId } from "@altan/domain/Ids"
import { defaultConnectionTimeoutSeconds } from "@altan/domain/Settings"
import { isTerminal, type Step, type StepConnection, type Task, type TaskError } from "@altan/domain/Task"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { policyOf, ToolFailed, ToolInputInvalid, ToolNotFound, type ToolResult } from "@altan/domain/ToolWorker"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { identity } from "effect/Function"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Approvals from "./Approvals.js"
import type { Progress, SessionTasks } from "./SessionTasks.js"

/** A step did not succeed; what happened is on its record. */
export class StepFailed {
  readonly _tag = "StepFailed"
  constructor(readonly step: string) {}
}

/**
 * A step waits for something outside its task: a person's decision (`waiting_approval`) or the tenant's connection
 * (`waiting_connection`); its task goes on when that comes.
 */
export class StepWaiting {
  readonly _tag = "StepWaiting"
  constructor(readonly step: string) {}
}

/** The step's deadline passed before its call answered. */
class StepTimedOut {
  readonly _tag = "StepTimedOut"
  static is(u: unknown): u is StepTimedOut {
    return Predicate.isTagged(u, "StepTimedOut")
  }
}

/** Maps any failure of a cluster call or tool to what is recorded on a step. */
export const stepError = (error: unknown): TaskError => {
  if (ToolNotFound.is(error)) return { code: error.code, message: error.message }
  if (ToolInputInvalid.is(error)) {
    return { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) }
  }
  if (ToolFailed.is(error)) {
    return {
      code: error.code,
      message: error.message,
      details: {
        retryable: error.retryable,
        ...(error.status ? { status: error.status } : {}),
        ...(error.retry_after_ms !== undefined ? { retry_after_ms: error.retry_after_ms } : {})
      }
    }
  }
  if (ConnectionRequired.is(error)) {
    return {
      code: error.code,
      message: error.message,
      // not its consent link: a step's error reaches the model and the session's history
      details: { provider: error.provider, reason: error.reason }
    }
  }
  if (RateLimited.is(error) || UpstreamUnavailable.is(error)) {
    return {
      code: error.code,
      message: error.message,
      details: { provider: error.provider, retry_after_ms: error.retry_after_ms }
    }
  }
  if (isClusterError(error)) {
    return { code: "unavailable", message: `the integrator could not take the call (${error._tag})` }
  }
  if (Unavailable.is(error)) {
    return { code: "unavailable", message: error.message ?? "a store the call needs could not be reached" }
  }
  return { code: "internal_error", message: String((error as { readonly message?: string }).message ?? error) }
}

/** Whether the connection a step waits for can be used now; when that cannot be learnt, the call finds out. */
const connectionReady = (ctx: StepContext, wait: StepConnection | undefined) =>
  wait === undefined
    ? Effect.succeed(true)
    : ctx.connection(`${ctx.tenantId}/${wait.provider}`).Ready().pipe(Effect.catchAll(() => Effect.succeed(true)))

/**
 * Puts a call on hold for the tenant's connection: the step waits (`waiting_connection`) until the connection is
 * there, or its deadline (kept from the step's first wait) fails the task; `connection.required` says so to whoever
 * follows the task, with where to consent when the provider's OAuth2 app is configured.
 */
const waitForConnection = (
  ctx: StepContext,
  taskId: TaskId,
  stepId: string,
  tool: string,
  required: ConnectionRequired,
  nowMs: number,
  timeoutMs: number
) =>
  Effect.gen(function*() {
    const since = new Date(nowMs).toISOString()
    const previous = ctx.tasks.current(taskId).task.steps.find((s) => s.id === stepId)?.connection
    const wait: StepConnection = {
      provider: required.provider,
      reason: required.reason,
      requested_at: since,
      expires_at: previous?.provider === required.provider
        ? previous.expires_at
        : new Date(nowMs + timeoutMs).toISOString(),
      ...(required.authorize_url ? { authorize_url: required.authorize_url } : {})
    }
    yield* ctx.tasks.updateStep(taskId, stepId, (s) => {
      const { error: _, ...rest } = s
      return { ...rest, status: "waiting_connection", connection: wait }
    }, {
      type: "connection.required",
      step_id: stepId,
      data: {
        step_id: stepId,
        tool,
        provider: wait.provider,
        reason: wait.reason,
        ...(wait.authorize_url ? { authorize_url: wait.authorize_url } : {}),
        expires_at: wait.expires_at
      }
    })
    if (ctx.onConnectionWait) yield* ctx.onConnectionWait(taskId, stepId, since, Date.parse(wait.expires_at))
    return wait
  })

/**
 * Which of the tenant's budgets of these names refuses a call now (none: they allow it, or that cannot be learnt and
 * the call finds out). Asked of the connection the call goes through (`provider`), which holds the tenant's settings
 * and counts.
 */
export const budgetRefusal = (
  ctx: StepContext,
  provider: string,
  budgets: ReadonlyArray<BudgetName>
): Effect.Effect<Option.Option<BudgetExhausted>> =>
  ctx.connection(`${ctx.tenantId}/${provider}`).Admit({ budgets }).pipe(
    Effect.as(Option.none()),
    Effect.catchAll((e) => Effect.succeed(BudgetExhausted.is(e) ? Option.some(e) : Option.none()))
  )

/** The record of a budget's wait, and the event that says so (`budget.exhausted`); the wake at its reset is asked. */
export const waitForBudget = (
  ctx: StepContext,
  taskId: TaskId,
  stepId: string,
  exhausted: BudgetExhausted,
  nowMs: number,
  record: (wait: BudgetWait, event: Progress) => Effect.Effect<unknown>,
  data: Record<string, unknown>
) =>
  Effect.gen(function*() {
    const since = new Date(nowMs).toISOString()
    const wait: BudgetWait = {
      budget: exhausted.budget,
      period: exhausted.period,
      limit: exhausted.limit,
      used: exhausted.used,
      resets_at: exhausted.resets_at,
      requested_at: since
    }
    // recorded with its event, in one write
    yield* record(wait, {
      type: "budget.exhausted",
      ...(stepId === "llm" ? {} : { step_id: stepId }),
      data: {
        ...data,
        budget: wait.budget,
        period: wait.period,
        limit: wait.limit,
        used: wait.used,
        resets_at: wait.resets_at
      }
    })
    if (ctx.onBudgetWait) yield* ctx.onBudgetWait(taskId, stepId, since, Date.parse(wait.resets_at))
    return wait
  })

/** What running a step needs from its session. */
export interface StepContext {
  readonly tenantId: TenantId
  readonly tasks: SessionTasks
  readonly connection: Effect.Effect.Success<typeof Connection.client>
  /**
   * The call of a tool this process runs itself (a pure built-in, see `PureCalls`), or undefined for one that goes
   * through the tenant's connection.
   */
  readonly pureCall?: (
    spec: ToolSpec
  ) =>
    | ((input: unknown, taskId: TaskId, stepId: string) => Effect.Effect<ToolResult, ToolInputInvalid | ToolFailed>)
    | undefined
  /** How long a step may run before it fails with `timeout`. */
  readonly stepTimeout: Duration.Duration
  /** Tool calls of the task that may run at once. */
  readonly limit: Effect.Semaphore
  /** Told when a call starts waiting for approval, to expire it after `timeoutMs` should no one decide. */
  readonly onApprovalAsked?: (taskId: TaskId, stepId: string, timeoutMs: number) => Effect.Effect<void>
  /** Told when a call starts waiting for its connection (`since`), to fail its task at `atMs` should it still wait. */
  readonly onConnectionWait?: (taskId: TaskId, stepId: string, since: string, atMs: number) => Effect.Effect<void>
  /** Told when a call (or the model's turn, `llm`) starts waiting for a spent budget, to look again at `atMs`. */
  readonly onBudgetWait?: (taskId: TaskId, stepId: string, since: string, atMs: number) => Effect.Effect<void>
  /**
   * The task as it is once one of its steps succeeded, written with that step: a plan ends there (succeeded) when it was
   * the last step to succeed, rather than in a write of its own.
   */
  readonly afterSuccess?: (task: Task) => Task
}

/** How long a resumed step, already past its deadline, may still take to learn its attempt's outcome. */
const resumeGrace = Duration.seconds(30)

/** Failures that say a call was not taken now, rather than how it went: asking again later is safe. */
export const notTaken = (e: unknown): boolean => Unavailable.is(e) || isClusterError(e)

/** Times a step asks again when its call broke (a defect or an interruption of the call) before it records it. */
const maxBreaks = 5

/** Attempts a step makes after outcomes turned out unknown, when calling again is safe. */
const maxUnknownRetries = 2

/**
 * Runs one step's tool call through the tenant's connection, under the side-effect ledger's rules:
 *
 * - the attempt is recorded as started (`running`, its number in `attempts`) before the call goes out, and its
 *   outcome when it returns;
 * - a step found `running` (its runner died mid-call; the task was resumed elsewhere) asks again for the same
 *   attempt: the tool service runs each attempt at most once, so it answers the first execution's outcome, joins it
 *   while it runs, or says the outcome is unknown;
 * - an unknown outcome is tried again (a new attempt) only when that is safe: the tool is idempotent, sends an
 *   idempotency key, or the tenant chose `on_unknown_outcome: "retry"`; otherwise the step ends `unknown_outcome`;
 * - the step's deadline fails it with `timeout`.
 *
 * A call that needs approval (the tool's `requires_approval`, the task's rules) is not made until a person approved
 * it: the step waits (`StepWaiting`), and runs, once, with the approved input after the decision.
 *
 * Fails with `StepFailed` when the step ends in any other way than `succeeded` (the reason is on its record).
 */
export const runStep = (
  ctx: StepContext,
  taskId: TaskId,
  stepId: string,
  spec: ToolSpec,
  proposed: unknown
): Effect.Effect<unknown, StepFailed | StepWaiting> =>
  ctx.limit.withPermits(1)(Effect.gen(function*() {
    const record = ctx.tasks.current(taskId)
    const { task } = record
    const found = task.steps.find((s) => s.id === stepId)!
    if (found.status === "succeeded") return found.output
    if (found.status === "waiting_approval") return yield* Effect.fail(new StepWaiting(stepId))
    // waiting for its connection: called again (a new attempt) once the connection can be used, else it waits on
    if (found.status === "waiting_connection") {
      if (isTerminal(task.status)) return yield* Effect.fail(new StepFailed(stepId))
      if (!(yield* connectionReady(ctx, found.connection))) return yield* Effect.fail(new StepWaiting(stepId))
    } else if (found.status === "waiting_budget") {
      // waiting for a spent budget: called again once it allows, else it waits on; refused until another reset (a new
      // period spent too), the wait is recorded anew, with its own wake at that reset
      if (isTerminal(task.status)) return yield* Effect.fail(new StepFailed(stepId))
      const refused = yield* budgetRefusal(ctx, spec.provider, [found.budget?.budget ?? "tool_calls"])
      if (Option.isSome(refused)) {
        if (refused.value.resets_at !== found.budget?.resets_at) {
          yield* waitForBudget(
            ctx,
            taskId,
            stepId,
            refused.value,
            yield* Clock.currentTimeMillis,
            (wait, event) => ctx.tasks.updateStep(taskId, stepId, (s) => ({ ...s, budget: wait }), event),
            { step_id: stepId, tool: spec.tool_id }
          )
        }
        return yield* Effect.fail(new StepWaiting(stepId))
      }
    } else if (found.status !== "pending" && found.status !== "running") {
      return yield* Effect.fail(new StepFailed(stepId))
    }
    if (
      found.status === "pending" && found.approval?.decision !== "approved" &&
      needsApproval(spec, task.approval_required ?? [])
    ) {
      if (isTerminal(task.status)) return yield* Effect.fail(new StepFailed(stepId))
      const timeoutMs = record.approval_timeout_ms ?? defaultApprovalTimeoutSeconds * 1000
      yield* Approvals.ask(ctx.tasks, taskId, stepId, spec, proposed, timeoutMs)
      if (ctx.onApprovalAsked) yield* ctx.onApprovalAsked(taskId, stepId, timeoutMs)
      return yield* Effect.fail(new StepWaiting(stepId))
    }
    // what was approved runs: the approver may have edited it
    const input = found.approval?.decision === "approved" ? found.input : proposed
    const retryUnknown = spec.idempotent || spec.idempotency_key === true || record.on_unknown_outcome === "retry"

    const start = (attempt: number) =>
      Effect.gen(function*() {
        const startedMs = yield* Clock.currentTimeMillis
        yield* ctx.tasks.update(taskId, (r) => ({
          ...r,
          task: {
            ...r.task,
            usage: { ...r.task.usage, tool_calls: r.task.usage.tool_calls + 1 },
            steps: r.task.steps.map((s) => {
              if (s.id !== stepId) return s
              const { error: _, ...rest } = s
              return {
                ...rest,
                status: "running",
                input,
                attempts: attempt,
                started_at: new Date(startedMs).toISOString()
              }
            })
          }
        }), { event: { type: "tool.started", step_id: stepId, data: { tool: spec.tool_id } } })
        return startedMs
      })

    const resumed = found.status === "running"
    const pure = ctx.pureCall?.(spec)
    const invoke = (attempt: number, resume: boolean) =>
      pure ? pure(input, taskId, stepId) : ctx.connection(`${ctx.tenantId}/${spec.provider}`).Invoke({
        tool_id: spec.tool_id,
        input,
        task_id: taskId,
        step_id: stepId,
        attempt,
        ...(resume ? { resume: true } : {}),
        ...(task.llms && task.llms.length > 0 ? { llms: task.llms } : {}),
        ...(spec.fallback ? { fallback: spec.fallback } : {}),
        ...(task.tools ? { allowed_tools: task.tools } : {}),
        policy: policyOf(spec),
        priority: task.mode === "async" ? "async" : "sync",
        ...(task.mode === "sync" && task.timeout_ms !== undefined
          ? { deadline: Date.parse(task.created_at) + task.timeout_ms }
          : {}),
        ...(record.oauth_redirect_uri ? { redirect_uri: record.oauth_redirect_uri } : {})
      })
    // a cancel (or any end of the task) stops the step before it calls anything
    const ended = () => isTerminal(ctx.tasks.current(taskId).task.status)

    // a pure built-in runs here and now and does nothing outside: its step is written once, when the call ended, with
    // its started and ended events (a runner dying mid-call leaves the step pending, and the resumed task calls again)
    if (pure && !resumed) {
      if (ended()) return yield* Effect.fail(new StepFailed(stepId))
      const attempt = found.attempts + 1
      const startedMs = yield* Clock.currentTimeMillis
      const exit = yield* Effect.exit(pure(input, taskId, stepId))
      const endMs = yield* Clock.currentTimeMillis
      const timing = { finished_at: new Date(endMs).toISOString(), duration_ms: endMs - startedMs }
      const started: Progress = { type: "tool.started", step_id: stepId, data: { tool: spec.tool_id } }
      const write = (f: (step: Omit<Step, "error">) => Step, end: Progress, then: (task: Task) => Task = identity) =>
        ctx.tasks.update(taskId, (r) => ({
          ...r,
          task: then({
            ...r.task,
            usage: { ...r.task.usage, tool_calls: r.task.usage.tool_calls + 1 },
            steps: r.task.steps.map((s) => {
              if (s.id !== stepId) return s
              const { error: _, ...rest } = s
              return f({ ...rest, ...timing, input, attempts: attempt, started_at: new Date(startedMs).toISOString() })
            })
          })
        }), { event: [started, end] })
      if (Exit.isSuccess(exit)) {
        const result = exit.value
        yield* write(
          (s) => ({ ...s, status: "succeeded", output: result.output, cached: result.cached }),
          { type: "tool.completed", step_id: stepId, data: { tool: spec.tool_id, ...timing } },
          ctx.afterSuccess
        )
        return result.output
      }
      const error = stepError(Cause.squash(exit.cause))
      yield* write(
        (s) => ({ ...s, status: "failed", error }),
        { type: "tool.failed", step_id: stepId, data: { tool: spec.tool_id, error } }
      )
      return yield* Effect.fail(new StepFailed(stepId))
    }

    let attempt = resumed ? found.attempts : found.attempts + 1
    if (!resumed && ended()) return yield* Effect.fail(new StepFailed(stepId))
    let startedMs = resumed && found.started_at !== undefined ? Date.parse(found.started_at) : yield* start(attempt)
    // a step resumed past its deadline still gets a moment to learn what became of its attempt
    let deadlineMs = Math.max(
      startedMs + Duration.toMillis(ctx.stepTimeout),
      resumed ? (yield* Clock.currentTimeMillis) + Duration.toMillis(resumeGrace) : 0
    )
    let unknowns = 0
    let breaks = 0
    let rechecked = false
    for (let asks = 0;; asks++) {
      if (ended()) return yield* Effect.fail(new StepFailed(stepId))
      const remaining = Math.max(0, deadlineMs - (yield* Clock.currentTimeMillis))
      const exit = yield* invoke(attempt, resumed || asks > 0).pipe(
        Effect.timeoutFail({ duration: Duration.millis(remaining), onTimeout: () => new StepTimedOut() }),
        Effect.exit
      )
      const endMs = yield* Clock.currentTimeMillis
      const timing = { finished_at: new Date(endMs).toISOString(), duration_ms: endMs - startedMs }
      if (Exit.isSuccess(exit)) {
        const result = exit.value
        const then = ctx.afterSuccess ?? identity
        yield* ctx.tasks.update(taskId, (r) => ({
          ...r,
          task: then({
            ...r.task,
            steps: r.task.steps.map((s): Step => {
              if (s.id !== stepId) return s
              const { error: _, ...rest } = s
              return {
                ...rest,
                ...timing,
                status: "succeeded",
                output: result.output,
                cached: result.cached,
                attempts: attempt - 1 + (result.attempts ?? 1),
                ...(result.last_error ? { last_error: result.last_error } : {}),
                ...(result.served_by ? { served_by: result.served_by } : {})
              }
            })
          })
        }), { event: { type: "tool.completed", step_id: stepId, data: { tool: spec.tool_id, ...timing } } })
        return result.output
      }
      // a defect or an interruption of the call itself (this fiber's own interruption stops it at the sleep below):
      // the cluster transport broke mid-call, or the handler was stopped on a runner shutting down; asking again for
      // the same attempt is safe, the tool service answers what became of it
      if (Option.isNone(Cause.failureOption(exit.cause)) && breaks++ < maxBreaks && endMs < deadlineMs) {
        yield* Effect.sleep(Duration.millis(500))
        continue
      }
      const failure = Cause.squash(exit.cause)
      // the call was not taken (a store or the cluster could not take it now): asking again for the same attempt is
      // safe whatever happened, the tool service runs it at most once
      if (notTaken(failure) && endMs < deadlineMs) {
        yield* Effect.sleep(Duration.millis(Math.min(2_000, 100 * 2 ** Math.min(asks, 5)))) // as `backoff` does
        continue
      }
      // the tenant's connection is missing or lost: the step waits for it, unless the tenant waits for none
      if (ConnectionRequired.is(failure) && record.connection_timeout_ms !== 0 && !ended()) {
        const timeoutMs = record.connection_timeout_ms ?? defaultConnectionTimeoutSeconds * 1000
        const wait = yield* waitForConnection(ctx, taskId, stepId, spec.tool_id, failure, endMs, timeoutMs)
        // connected between the call and the wait's record (its notice found no wait to wake): once, called again
        if (!rechecked && (yield* connectionReady(ctx, wait))) {
          rechecked = true
          attempt++
          startedMs = yield* start(attempt)
          deadlineMs = startedMs + Duration.toMillis(ctx.stepTimeout)
          continue
        }
        return yield* Effect.fail(new StepWaiting(stepId))
      }
      // a spent budget: the step waits for it to reset, or for an admin to raise it
      if (BudgetExhausted.is(failure) && !ended()) {
        yield* waitForBudget(ctx, taskId, stepId, failure, endMs, (wait, event) =>
          ctx.tasks.updateStep(taskId, stepId, (s) => {
            const { error: _, ...rest } = s
            return { ...rest, status: "waiting_budget", budget: wait }
          }, event), { step_id: stepId, tool: spec.tool_id })
        // raised between the call and the wait's record (its notice found no wait to wake): once, called again
        if (!rechecked && Option.isNone(yield* budgetRefusal(ctx, spec.provider, [failure.budget]))) {
          rechecked = true
          attempt++
          startedMs = yield* start(attempt)
          deadlineMs = startedMs + Duration.toMillis(ctx.stepTimeout)
          continue
        }
        return yield* Effect.fail(new StepWaiting(stepId))
      }
      const unknown = ToolFailed.is(failure) && failure.unknown_outcome === true
      if (unknown && retryUnknown && unknowns < maxUnknownRetries && !ended()) {
        unknowns++
        attempt++
        startedMs = yield* start(attempt)
        deadlineMs = startedMs + Duration.toMillis(ctx.stepTimeout)
        continue
      }
      const [status, error] = unknown
        ? ["unknown_outcome" as const, {
          code: "unknown_outcome",
          message: `${spec.tool_id} was called and its outcome is unknown (the call was cut off mid-way); it was not ` +
            `called again, as that could apply it twice`
        }]
        : StepTimedOut.is(failure)
        ? ["failed" as const, {
          code: "timeout",
          message: `the step did not finish within ${Duration.format(ctx.stepTimeout)}`,
          // a call with side effects handed to the tool service may still have been applied
          ...(spec.side_effect && !spec.idempotent ? { details: { outcome: "unknown" } } : {})
        }]
        : ["failed" as const, stepError(failure)]
      const tries = (failure as { readonly attempts?: number }).attempts
      yield* ctx.tasks.updateStep(taskId, stepId, (s) => ({
        ...s,
        ...timing,
        status,
        error,
        attempts: attempt - 1 + (tries ?? 1)
      }), { type: "tool.failed", step_id: stepId, data: { tool: spec.tool_id, error } })
      return yield* Effect.fail(new StepFailed(stepId))
    }
  }))
