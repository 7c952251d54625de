import { AuditLog } from "@altan/audit/AuditLog"
import {
  acceptedTask,
  AgentSession,
  ExpireApproval,
  ExpireConnectionWait,
  ResumeAt,
  type SubmitPayload
} from "@altan/domain/AgentSession"
import { isRepeat } from "@altan/domain/Approval"
import { Connection } from "@altan/domain/Connection"
import { Conflict, Forbidden, InvalidRequest, NotFound } from "@altan/domain/Errors"
import { parseEntityId, type SessionId, type TaskId, type TenantId } from "@altan/domain/Ids"
import { taskMetrics } from "@altan/domain/Metrics"
import type { Principal } from "@altan/domain/Principal"
import { PureTools } from "@altan/domain/PureTools"
import { connectionExpired, isTerminal, isWaiting, llmTurnWaits, type Task, withoutWaiting } from "@altan/domain/Task"
import { ToolWorker } from "@altan/domain/ToolWorker"
import { AlreadyProcessingMessage } from "@effect/cluster/ClusterError"
import * as Entity from "@effect/cluster/Entity"
import type { EntityAddress } from "@effect/cluster/EntityAddress"
import type * as Sharding from "@effect/cluster/Sharding"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { AgentConfig } from "./AgentConfig.js"
import { type LoopContext, runConversation } from "./AgentLoop.js"
import * as Approvals from "./Approvals.js"
import { EventLog } from "./EventLog.js"
import { runPlan } from "./PlanRunner.js"
import { pureCalls } from "./PureCalls.js"
import * as SessionTasks from "./SessionTasks.js"
import { TaskStore, unavailable } from "./TaskStore.js"

/** Longer than the integrator's read caches (2 s for configuration, `SECRETS_CACHE_TTL` 30 s by default for secrets). */
const staleReadMarginMs = 35_000

/**
 * What the task's step `stepId` (or `llm`, the model's next turn) waits on a connection or a budget since, and when a
 * budget's period resets; none when it does not wait so.
 */
const waitOf = (task: Task, stepId: string): { readonly since: string; readonly resetsAt?: number } | undefined => {
  if (isTerminal(task.status)) return undefined
  // the model's turn: only a natural-language task has one (a plan may have a step of that name)
  if (stepId === "llm" && typeof task.input === "string") {
    return task.budget_wait && llmTurnWaits(task)
      ? { since: task.budget_wait.requested_at, resetsAt: Date.parse(task.budget_wait.resets_at) }
      : undefined
  }
  const step = task.steps.find((s) => s.id === stepId)
  if (step?.status === "waiting_budget" && step.budget) {
    return { since: step.budget.requested_at, resetsAt: Date.parse(step.budget.resets_at) }
  }
  if (step?.status === "waiting_connection" && step.connection) return { since: step.connection.requested_at }
  return undefined
}

/**
 * `AgentSession[tenant/session]`: owns a session's tasks and context. A submitted task is recorded, then run by a
 * persisted message, so it is redelivered to whichever runner owns the session if this one dies: a sync task by its
 * own `Submit` (which answers once the task ended), an async one by a `Run` the session sends itself (its `Submit`
 * answers at once). A resumed task goes on from what its record says (see `runStep` for what happens to a step cut off
 * mid-call). Structured plans run as a DAG, natural-language tasks through the agent loop; every tool call goes
 * through `Connection[tenant/provider]`.
 */
export const AgentSessionLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* AgentConfig
  // Clients are built once for all sessions, not per activation.
  const connection = yield* Connection.client
  const toolWorker = yield* ToolWorker.client
  const sessions = yield* AgentSession.client
  const pureTools = yield* PureTools
  yield* taskMetrics.initialize
  /** A session's task machinery and its handlers, built when it first gets a message about tasks. */
  const working = (
    address: EntityAddress,
    tenantId: TenantId,
    sessionId: SessionId,
    keepAlive: (enabled: boolean) => Effect.Effect<void>
  ) =>
    Effect.gen(function*() {
      const store = yield* TaskStore
      const events = yield* EventLog
      const audit = yield* AuditLog
      const tasks = yield* SessionTasks.make(tenantId, sessionId, { keepAlive })
      const pureCall = pureCalls(pureTools, audit, tenantId)
      const self = sessions(address.entityId)
      const attributes = { "altan.tenant_id": tenantId, "altan.session_id": sessionId }
      const running = new Map<TaskId, Fiber.RuntimeFiber<Task>>()
      // decisions recorded per task by this activation: a run that ends waiting while one came goes on
      const decisions = new Map<TaskId, number>()
      // tasks whose interruption is a cancel (not a runner shutting down, after which the task resumes elsewhere)
      const cancelling = new Set<TaskId>()

      const read = (taskId: TaskId) =>
        tasks.record(taskId).pipe(
          Effect.mapError(unavailable),
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(new NotFound({ message: `task ${taskId} not found` })),
            onSome: Effect.succeed
          }))
        )

      /**
       * A persisted message the session sends itself, stored whatever it takes: one already being processed is there
       * (its primary key is the same), anything else is retried.
       */
      const toSelf = <E extends { readonly _tag: string }>(what: string, send: Effect.Effect<void, E>) =>
        send.pipe(
          Effect.catchIf(AlreadyProcessingMessage.is, () => Effect.void),
          Effect.tapError((e) => Effect.logWarning(`${what} failed, retrying: ${e._tag}`)),
          Effect.retry(SessionTasks.backoff),
          Effect.orDie
        )

      /**
       * Makes sure the task's `Run` is stored: sending it again is harmless, its primary key is the task id. It
       * carries the submit, to record the task again should its record be lost.
       */
      const schedule = (submit: SubmitPayload) =>
        toSelf(`scheduling task ${submit.task_id}`, self.Run({ task_id: submit.task_id, submit }, { discard: true }))

      /** Records a submitted task, as accepted; `started`: running already (a sync task, run by its submit). */
      const record = (submit: SubmitPayload, started = false) =>
        Effect.gen(function*() {
          const task = acceptedTask(submit)
          yield* tasks.create({
            task,
            specs: submit.specs ?? [],
            on_unknown_outcome: submit.on_unknown_outcome ?? "fail",
            ...(submit.approval_timeout_ms !== undefined ? { approval_timeout_ms: submit.approval_timeout_ms } : {}),
            ...(submit.connection_timeout_ms !== undefined
              ? { connection_timeout_ms: submit.connection_timeout_ms }
              : {}),
            ...(submit.oauth_redirect_uri !== undefined ? { oauth_redirect_uri: submit.oauth_redirect_uri } : {}),
            // a natural-language task's exchange starts with its input, in its first write
            ...(typeof task.input === "string" ? { transcript: [{ role: "user" as const, content: task.input }] } : {})
          }, { started })
          return task
        })

      const cancelled = (taskId: TaskId) =>
        tasks.updateTask(taskId, (t) =>
          isTerminal(t.status) ? t : {
            ...withoutWaiting(t),
            status: "cancelled",
            error: { code: "cancelled", message: "the task was cancelled" },
            steps: t.steps.map((s) =>
              s.status === "running" || s.status === "pending" || isWaiting(s.status)
                ? { ...s, status: "cancelled" as const }
                : s
            )
          })

      const execute: (taskId: TaskId) => Effect.Effect<Task> = Effect.fn("AgentSession.execute", {
        attributes,
        captureStackTrace: false
      })(
        function*(taskId: TaskId) {
          yield* Effect.annotateCurrentSpan("altan.task_id", taskId)
          const { task } = tasks.current(taskId)
          // cancelled (or ended) while its run was on its way: nothing more to do
          if (isTerminal(task.status)) return task
          if (task.status === "queued") {
            yield* tasks.updateTask(taskId, (t) => ({ ...t, status: "running" }), { type: "task.started" })
          } else if (task.status === "waiting") {
            // woken by a decision: it runs what can run now, and waits again for what is still undecided
            yield* tasks.updateTask(taskId, (t) => ({ ...withoutWaiting(t), status: "running" }))
          }
          const ctx: LoopContext = {
            tenantId,
            tasks,
            connection,
            pureCall,
            toolWorker,
            store,
            config,
            stepTimeout: config.stepTimeout,
            limit: yield* Effect.makeSemaphore(config.maxParallelToolCalls),
            onApprovalAsked: (taskId, stepId, timeoutMs) =>
              Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
                toSelf(
                  `setting the approval deadline of ${taskId}`,
                  self.ExpireApproval(new ExpireApproval({ task_id: taskId, step_id: stepId, at: nowMs + timeoutMs }), {
                    discard: true
                  })
                )),
            onConnectionWait: (taskId, stepId, since, atMs) =>
              toSelf(
                `setting the connection deadline of ${taskId}`,
                self.ExpireConnectionWait(
                  new ExpireConnectionWait({ task_id: taskId, step_id: stepId, since, at: atMs }),
                  { discard: true }
                )
              ),
            onBudgetWait: (taskId, stepId, since, atMs) => resumeAt(taskId, stepId, since, atMs)
          }
          return yield* typeof tasks.current(taskId).task.input === "string"
            ? runConversation(ctx, taskId)
            : runPlan(ctx, taskId)
        },
        // a bug must not leave the task running forever: it fails, with the message
        (effect, taskId) =>
          Effect.catchAllDefect(effect, (defect) =>
            Effect.zipRight(
              Effect.logError(`task ${taskId} failed on a defect`, Cause.die(defect)),
              tasks.updateTask(taskId, (t) => ({
                ...t,
                status: "failed",
                error: {
                  code: "internal_error",
                  message: `the task stopped on an internal error: ${
                    defect instanceof Error ? defect.message : String(defect)
                  }`
                }
              }))
            )),
        // interrupted by a runner shutting down: left as recorded, the redelivered `Submit` or `Run` resumes it elsewhere
        (effect, taskId) =>
          Effect.onInterrupt(effect, () => (cancelling.has(taskId) ? cancelled(taskId) : Effect.void)),
        (effect, taskId) => Effect.ensuring(effect, Effect.sync(() => cancelling.delete(taskId)))
      )

      /**
       * Runs the task until it ends or waits for a decision (joining a run already in flight), and answers it as it
       * then is. A decision that came while it ran makes it go on.
       */
      const drive = (taskId: TaskId) =>
        Effect.gen(function*() {
          while (true) {
            const seen = decisions.get(taskId) ?? 0
            const fiber = running.get(taskId) ?? (yield* Effect.fork(execute(taskId)))
            running.set(taskId, fiber)
            yield* Fiber.await(fiber).pipe(Effect.ensuring(Effect.sync(() => running.delete(taskId))))
            const task = tasks.current(taskId).task
            if (isTerminal(task.status)) return task
            // waiting for decisions: done until one wakes it, unless one came while it ran
            if (task.status === "waiting") {
              if ((decisions.get(taskId) ?? 0) === seen) return task
              continue
            }
            // the run stopped short of an end (a call came back interrupted: its handler was stopped on a runner
            // shutting down): it resumes from what its record says, as it would on another runner
            yield* Effect.logWarning(`task ${taskId} stopped before its end; resuming it`)
            yield* Effect.sleep("1 second")
          }
        })

      /** Asks the task to look again at its wait of `stepId` (since `since`) at `atMs`: a `ResumeAt` to itself. */
      const resumeAt = (taskId: TaskId, stepId: string, since: string, atMs: number) =>
        toSelf(
          `setting a wake of ${taskId}`,
          self.ResumeAt(new ResumeAt({ task_id: taskId, step_id: stepId, since, at: atMs }), { discard: true })
        )

      /** Makes sure the task runs again after a decision: a `Run` of its own per decided step. */
      const wake = (taskId: TaskId, stepId: string) =>
        toSelf(`waking task ${taskId}`, self.Run({ task_id: taskId, after: stepId }, { discard: true }))

      const auditDecision = (
        principal: Principal,
        taskId: TaskId,
        stepId: string,
        outcome: "ok" | "denied",
        details: Record<string, unknown>
      ) =>
        audit.record({
          tenant_id: tenantId,
          user: principal.userId,
          action: "approval.decision",
          target: `task:${taskId}`,
          outcome,
          details: { step_id: stepId, ...details }
        })

      return {
        Submit: Effect.fn("AgentSession.submit", { attributes, captureStackTrace: false })(function*({ payload }) {
          yield* Effect.annotateCurrentSpan("altan.task_id", payload.task_id)
          const { principal, task_id } = payload
          if (principal.tenantId !== tenantId) {
            return yield* new InvalidRequest({ message: "the principal does not belong to this session's tenant" })
          }
          // a sync task runs in its submit, which answers it once it ended (or waits): one persisted message, whose
          // redelivery after a runner died resumes the task; an async one is answered at once and runs from a `Run`
          const inline = payload.request.mode === "sync"
          // a redelivered or repeated submit: the task exists, and so must what runs it
          const existing = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
          if (Option.isSome(existing)) {
            const task = existing.value.task
            if (isTerminal(task.status)) {
              if (inline) yield* tasks.ensureTerminalEvent(task)
              return task
            }
            if (!inline) {
              yield* schedule(payload)
              return task
            }
          } else {
            // a sync task starts at once: recorded running, in one write with its queued and started events
            const task = yield* record(payload, inline)
            if (!inline) {
              yield* schedule(payload)
              return task
            }
          }
          return yield* drive(task_id)
        }),

        Run: ({ payload }: {
          readonly payload: {
            readonly task_id: TaskId
            readonly submit?: SubmitPayload | undefined
            readonly after?: string | undefined
          }
        }) =>
          Effect.gen(function*() {
            const taskId = payload.task_id
            // a wake (a decision, a connection, a budget): a run in flight that ends waiting looks again
            if (payload.after !== undefined) decisions.set(taskId, (decisions.get(taskId) ?? 0) + 1)
            const found = yield* SessionTasks.durably(`reading task ${taskId}`, tasks.record(taskId))
            if (Option.isNone(found)) {
              if (payload.submit === undefined) {
                return yield* Effect.logError(`task ${taskId} has a Run but no record: nothing to run`)
              }
              // its record was lost (Redis dropped what it acknowledged last, and the session moved meanwhile):
              // recorded again as accepted; steps that had run are asked again for their attempts
              yield* Effect.logWarning(`task ${taskId} has a Run but no record: recording it again from its submit`)
              yield* record(payload.submit)
            } else if (isTerminal(found.value.task.status)) {
              return yield* tasks.ensureTerminalEvent(found.value.task)
            }
            yield* drive(taskId)
            // woken by a notice (a connection made, budgets changed) and still waiting on the same: the integrator
            // runner that answered may have read through a cache older than the change; one more look after it
            const notice = payload.after?.match(/^(.+)@[^@#]+#.+$/)
            if (notice) {
              const wait = waitOf(tasks.current(taskId).task, notice[1]!)
              if (wait !== undefined) {
                yield* resumeAt(taskId, notice[1]!, wait.since, (yield* Clock.currentTimeMillis) + staleReadMarginMs)
              }
            }
          }),

        Decide: Effect.fn("AgentSession.decide", { attributes, captureStackTrace: false })(function*({ payload }) {
          const { decision, principal, step_id, task_id } = payload
          yield* Effect.annotateCurrentSpan({ "altan.task_id": task_id, "altan.step_id": step_id })
          if (principal.tenantId !== tenantId) {
            return yield* new InvalidRequest({ message: "the principal does not belong to this session's tenant" })
          }
          // a stored decision's answer is final: storage that cannot be read now is waited for, not answered
          const found = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
          if (Option.isNone(found)) return yield* new NotFound({ message: `task ${task_id} not found` })
          const record = found.value
          const step = record.task.steps.find((s) => s.id === step_id)
          const verb = decision._tag === "Approve" ? "approved" : "rejected"
          // a repeat of a decision already recorded (the same message redelivered after a crash): it stands, and the
          // task is made sure to go on
          if (step !== undefined && isRepeat(step, principal, decision)) {
            if (!isTerminal(record.task.status)) yield* wake(task_id, step_id)
            return record.task
          }
          const at = yield* SessionTasks.now
          const checked = Approvals.decide(record.task, step_id, principal, decision, at)
          if (Either.isLeft(checked)) {
            if (Forbidden.is(checked.left)) {
              yield* auditDecision(principal, task_id, step_id, "denied", { decision: verb })
            }
            return yield* checked.left
          }
          // decided again under the task's lock, on the record as it is now
          const applied: { result: ReturnType<typeof Approvals.decide> } = { result: checked }
          // recorded with its event, in one write
          yield* tasks.update(task_id, (r) => {
            applied.result = Approvals.decide(r.task, step_id, principal, decision, at)
            return Either.isRight(applied.result) ? { ...r, task: applied.result.right } : r
          }, {
            event: (task) => {
              const decided = task.steps.find((s) => s.id === step_id)!
              return {
                type: "approval.decided",
                step_id,
                data: {
                  step_id,
                  tool: decided.tool,
                  decision: verb,
                  decided_by: principal.userId,
                  input_hash: decided.approval!.input_hash,
                  ...(decided.approval!.edited ? { edited: true, input: decided.input } : {}),
                  ...(decided.approval!.reason ? { reason: decided.approval!.reason } : {})
                }
              }
            }
          })
          if (Either.isLeft(applied.result)) return yield* applied.result.left
          const decided = applied.result.right.steps.find((s) => s.id === step_id)!
          yield* auditDecision(principal, task_id, step_id, "ok", {
            decision: verb,
            tool: decided.tool,
            input_hash: decided.approval!.input_hash,
            ...(decided.approval!.edited ? { edited: true } : {})
          })
          decisions.set(task_id, (decisions.get(task_id) ?? 0) + 1)
          yield* wake(task_id, step_id)
          return tasks.current(task_id).task
        }),

        ExpireApproval: Effect.fn("AgentSession.expireApproval", { attributes, captureStackTrace: false })(
          function*({ payload }) {
            const { step_id, task_id } = payload
            // delivered early (a storage that does not hold messages until their time): wait for it
            const early = payload.at - (yield* Clock.currentTimeMillis)
            if (early > 0) yield* Effect.sleep(early)
            const found = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
            if (Option.isNone(found)) return
            const step = found.value.task.steps.find((s) => s.id === step_id)
            if (isTerminal(found.value.task.status) || step?.status !== "waiting_approval") return
            // a run in flight stops before its next call (the task is terminal), and makes none of the waiting ones
            // the expiry's event goes with the write, before the task's end it may bring (a follower stops there)
            yield* tasks.updateTask(
              task_id,
              (t) => Approvals.expire(t, step_id),
              (task) =>
                task.status === "failed"
                  ? { type: "approval.decided", step_id, data: { step_id, tool: step.tool, decision: "expired" } }
                  : undefined
            )
          }
        ),

        ExpireConnectionWait: Effect.fn("AgentSession.expireConnectionWait", { attributes, captureStackTrace: false })(
          function*({ payload }) {
            const { since, step_id, task_id } = payload
            const early = payload.at - (yield* Clock.currentTimeMillis)
            if (early > 0) yield* Effect.sleep(early)
            const found = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
            if (Option.isNone(found)) return
            const step = found.value.task.steps.find((s) => s.id === step_id)
            // this wait is over (connected, cancelled, or waiting again since: that wait has its own deadline)
            if (
              isTerminal(found.value.task.status) || step?.status !== "waiting_connection" ||
              step.connection?.requested_at !== since
            ) return
            yield* tasks.updateTask(task_id, (t) => connectionExpired(t, step_id))
          }
        ),

        ResumeAt: Effect.fn("AgentSession.resumeAt", { attributes, captureStackTrace: false })(function*({ payload }) {
          const { since, step_id, task_id } = payload
          const early = payload.at - (yield* Clock.currentTimeMillis)
          if (early > 0) yield* Effect.sleep(early)
          const found = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
          if (Option.isNone(found) || isTerminal(found.value.task.status)) return
          // this wait is over (it went on earlier, or it waits again since: that wait has its own wakes)
          if (waitOf(found.value.task, step_id)?.since !== since) return
          decisions.set(task_id, (decisions.get(task_id) ?? 0) + 1)
          yield* drive(task_id)
          // a budget whose reset passed here, but not yet where it is counted (that runner's clock is behind): the
          // same wait looks again shortly
          const still = waitOf(tasks.current(task_id).task, step_id)
          const nowMs = yield* Clock.currentTimeMillis
          if (still !== undefined && still.since === since && still.resetsAt !== undefined && still.resetsAt <= nowMs) {
            yield* resumeAt(task_id, step_id, since, nowMs + 5_000)
          }
        }),

        GetTask: (
          { payload }: { readonly payload: { readonly task_id: TaskId; readonly wait_ms?: number | undefined } }
        ) =>
          Effect.gen(function*() {
            const record = yield* read(payload.task_id)
            if (isTerminal(record.task.status) || !payload.wait_ms) return record.task
            yield* tasks.awaitFinished(payload.task_id, payload.wait_ms)
            return (yield* read(payload.task_id)).task
          }),

        Events: (
          { payload }: { readonly payload: { readonly task_id: TaskId; readonly after?: string | undefined } }
        ) =>
          read(payload.task_id).pipe(
            Effect.map(() =>
              events.follow(tenantId, payload.task_id, payload.after).pipe(Stream.mapError(unavailable))
            ),
            Stream.unwrap
          ),

        Cancel: Effect.fn("AgentSession.cancel", { attributes, captureStackTrace: false })(function*({ payload }) {
          const record = yield* read(payload.task_id)
          if (isTerminal(record.task.status)) {
            return yield* new Conflict({
              code: "task_finished",
              message: `task ${payload.task_id} already ${record.task.status}`,
              details: { status: record.task.status }
            })
          }
          const fiber = running.get(payload.task_id)
          if (fiber) {
            cancelling.add(payload.task_id)
            yield* Fiber.interrupt(fiber)
            return tasks.current(payload.task_id).task
          }
          return yield* cancelled(payload.task_id)
        })
      }
    })

  return AgentSession.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key, tenantId } = parseEntityId(address.entityId)
      const sessionId = key as SessionId
      const store = yield* TaskStore
      const context = yield* Effect.context<TaskStore | EventLog | AuditLog | Scope.Scope>()
      const entity = yield* Effect.context<Sharding.Sharding | Entity.CurrentAddress>()
      const keepAlive = (enabled: boolean) => Effect.provide(Entity.keepAlive(enabled), entity)
      // a hold through a Redis outage (see `SessionTasks.make`) is a persisted message: one a runner sent before it
      // died comes back to the session's next activation, where nothing would end it, and ends at once
      yield* keepAlive(false)
      // an idle session (activated by a read, or waiting for its next task after a passivation) holds only this;
      // its task machinery is built by its first message about a task, once, in the session's scope
      let built: Deferred.Deferred<Effect.Effect.Success<ReturnType<typeof working>>> | undefined
      const full = Effect.suspend(() => {
        if (built) return Deferred.await(built)
        const deferred = (built = Deferred.unsafeMake<Effect.Effect.Success<ReturnType<typeof working>>>(FiberId.none))
        return working(address, tenantId, sessionId, keepAlive).pipe(
          Effect.tap((handlers) => Deferred.succeed(deferred, handlers)),
          Effect.provide(context),
          Effect.uninterruptible
        )
      })
      return AgentSession.of({
        Submit: (request) => Effect.flatMap(full, (h) => h.Submit(request)),
        Run: (request) => Effect.flatMap(full, (h) => h.Run(request)),
        Decide: (request) => Effect.flatMap(full, (h) => h.Decide(request)),
        ExpireApproval: (request) => Effect.flatMap(full, (h) => h.ExpireApproval(request)),
        ExpireConnectionWait: (request) => Effect.flatMap(full, (h) => h.ExpireConnectionWait(request)),
        ResumeAt: (request) => Effect.flatMap(full, (h) => h.ResumeAt(request)),
        GetTask: (request) => Effect.flatMap(full, (h) => h.GetTask(request)),
        Events: (request) => Stream.unwrap(Effect.map(full, (h) => h.Events(request))),
        Cancel: (request) => Effect.flatMap(full, (h) => h.Cancel(request)),

        GetSession: () =>
          store.summary(tenantId, sessionId).pipe(
            Effect.mapError(unavailable),
            Effect.flatMap(Option.match({
              onNone: () => Effect.fail(new NotFound({ message: `session ${sessionId} not found` })),
              onSome: (summary) => Effect.succeed({ session_id: sessionId, ...summary })
            }))
          ),

        Reset: () =>
          Effect.gen(function*() {
            const summary = yield* store.summary(tenantId, sessionId)
            if (Option.isNone(summary)) return
            yield* store.resetMessages(tenantId, sessionId, yield* SessionTasks.now)
          }).pipe(Effect.mapError(unavailable))
      })
    }),
    // a defect fails the message it happened in, never restarts the session (which would replay the others)
    { concurrency: "unbounded", maxIdleTime: config.sessionMaxIdleTime, disableFatalDefects: true }
  )
}))
