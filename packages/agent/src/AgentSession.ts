import { acceptedTask, AgentSession, type SubmitPayload } from "@altan/domain/AgentSession"
import { Connection } from "@altan/domain/Connection"
import { Conflict, InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import { parseEntityId, type SessionId, type TaskId } from "@altan/domain/Ids"
import { taskMetrics } from "@altan/domain/Metrics"
import { isTerminal, type Task } from "@altan/domain/Task"
import { ToolWorker } from "@altan/domain/ToolWorker"
import type { RedisError } from "@altan/redis/Redis"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { AgentConfig } from "./AgentConfig.js"
import { type LoopContext, runConversation } from "./AgentLoop.js"
import { EventLog } from "./EventLog.js"
import { runPlan } from "./PlanRunner.js"
import * as SessionTasks from "./SessionTasks.js"
import { TaskStore } from "./TaskStore.js"

const unavailable = (e: RedisError) =>
  new Unavailable({ message: `task storage cannot be read right now; retry later (${e.message})` })

/**
 * `AgentSession[tenant/session]`: owns a session's tasks and context. A submitted task is recorded, then run by a
 * persisted `Run` the session sends itself, so it is redelivered to whichever runner owns the session if this one
 * dies; a resumed task goes on from what its record says (see `runStep` for what happens to a step cut off
 * mid-call). Structured plans run as a DAG, natural-language tasks through the agent loop; every tool call goes
 * through `Connection[tenant/provider]`.
 */
export const AgentSessionLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* AgentConfig
  // Clients are built once for all sessions, not per activation.
  const connection = yield* Connection.client
  const toolWorker = yield* ToolWorker.client
  const sessions = yield* AgentSession.client
  yield* taskMetrics.initialize
  return AgentSession.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key, tenantId } = parseEntityId(address.entityId)
      const sessionId = key as SessionId
      const store = yield* TaskStore
      const events = yield* EventLog
      const tasks = yield* SessionTasks.make(tenantId, sessionId)
      const self = sessions(address.entityId)
      const attributes = { "altan.tenant_id": tenantId, "altan.session_id": sessionId }
      const running = new Map<TaskId, Fiber.RuntimeFiber<Task>>()
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
       * Makes sure the task's `Run` is stored: sending it again is harmless, its primary key is the task id. It
       * carries the submit, to record the task again should its record be lost.
       */
      const schedule = (submit: SubmitPayload) =>
        self.Run({ task_id: submit.task_id, submit }, { discard: true }).pipe(
          Effect.catchTag("AlreadyProcessingMessage", () => Effect.void),
          Effect.tapError((e) => Effect.logWarning(`scheduling task ${submit.task_id} failed, retrying: ${e._tag}`)),
          Effect.retry(SessionTasks.backoff),
          Effect.orDie
        )

      /** Records a submitted task, as accepted. */
      const record = (submit: SubmitPayload) =>
        Effect.gen(function*() {
          const task = acceptedTask(submit)
          yield* tasks.create({
            task,
            specs: submit.specs ?? [],
            on_unknown_outcome: submit.on_unknown_outcome ?? "fail"
          })
          return task
        })

      const cancelled = (taskId: TaskId) =>
        tasks.updateTask(taskId, (t) =>
          isTerminal(t.status) ? t : {
            ...t,
            status: "cancelled",
            error: { code: "cancelled", message: "the task was cancelled" },
            steps: t.steps.map((s) =>
              s.status === "running" || s.status === "pending" ? { ...s, status: "cancelled" as const } : s
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
            yield* tasks.updateTask(taskId, (t) => ({ ...t, status: "running" }))
            yield* tasks.emit(taskId, "task.started")
          }
          const ctx: LoopContext = {
            tenantId,
            tasks,
            connection,
            toolWorker,
            store,
            config,
            stepTimeout: config.stepTimeout,
            limit: yield* Effect.makeSemaphore(config.maxParallelToolCalls)
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
        // interrupted by a runner shutting down: left as recorded, the redelivered `Run` resumes it elsewhere
        (effect, taskId) =>
          Effect.onInterrupt(effect, () => (cancelling.has(taskId) ? cancelled(taskId) : Effect.void)),
        (effect, taskId) => Effect.ensuring(effect, Effect.sync(() => cancelling.delete(taskId)))
      )

      return AgentSession.of({
        Submit: Effect.fn("AgentSession.submit", { attributes, captureStackTrace: false })(function*({ payload }) {
          yield* Effect.annotateCurrentSpan("altan.task_id", payload.task_id)
          const { principal, task_id } = payload
          if (principal.tenantId !== tenantId) {
            return yield* new InvalidRequest({ message: "the principal does not belong to this session's tenant" })
          }
          // a redelivered or repeated submit: the task exists, and its `Run` must too
          const existing = yield* SessionTasks.durably(`reading task ${task_id}`, tasks.record(task_id))
          if (Option.isSome(existing)) {
            if (!isTerminal(existing.value.task.status)) yield* schedule(payload)
            return existing.value.task
          }
          const task = yield* record(payload)
          yield* schedule(payload)
          return task
        }),

        Run: ({ payload }) =>
          Effect.gen(function*() {
            const taskId = payload.task_id
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
            while (true) {
              const fiber = running.get(taskId) ?? (yield* Effect.fork(execute(taskId)))
              running.set(taskId, fiber)
              yield* Fiber.await(fiber).pipe(Effect.ensuring(Effect.sync(() => running.delete(taskId))))
              if (isTerminal(tasks.current(taskId).task.status)) return
              // the run stopped short of an end (a call came back interrupted: its handler was stopped on a runner
              // shutting down): it resumes from what its record says, as it would on another runner
              yield* Effect.logWarning(`task ${taskId} stopped before its end; resuming it`)
              yield* Effect.sleep("1 second")
            }
          }),

        GetTask: ({ payload }) =>
          Effect.gen(function*() {
            const record = yield* read(payload.task_id)
            if (isTerminal(record.task.status) || !payload.wait_ms) return record.task
            yield* tasks.awaitFinished(payload.task_id, payload.wait_ms)
            return (yield* read(payload.task_id)).task
          }),

        Events: ({ payload }) =>
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
        }),

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
