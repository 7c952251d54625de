import { AuditLog } from "@altan/audit/AuditLog"
import type { SessionId, TaskId, TenantId } from "@altan/domain/Ids"
import type { ChatMessage } from "@altan/domain/Llm"
import { taskMetrics } from "@altan/domain/Metrics"
import type { Step, Task, TaskEventType } from "@altan/domain/Task"
import { isTerminal } from "@altan/domain/Task"
import type { RedisError } from "@altan/redis/Redis"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { type EventBody, EventLog, isTerminal as isTerminalEvent } from "./EventLog.js"
import { type TaskRecord, TaskStore } from "./TaskStore.js"

export const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms).toISOString())

/** How the session waits out a store or a service that cannot answer now: backing off to once every 2 s. */
export const backoff = Schedule.exponential("100 millis", 2).pipe(Schedule.union(Schedule.spaced("2 seconds")))

/**
 * A storage write that a task's progress depends on: retried until it succeeds (backing off to every 2 s), so a
 * storage outage pauses tasks instead of losing or falsifying what they did. Interruption (a cancel, a runner
 * shutting down) still stops it.
 */
export const durably = <A>(what: string, effect: Effect.Effect<A, RedisError>): Effect.Effect<A> =>
  effect.pipe(
    Effect.tapError((e) => Effect.logWarning(`${what} failed, retrying: ${e.message}`)),
    Effect.retry(backoff),
    Effect.orDie
  )

/** A progress event of a task, as its writer gives it (the log adds its id, the session the task and the time). */
export interface Progress {
  readonly type: TaskEventType
  readonly step_id?: string
  readonly data?: unknown
}

/** The events a change carries: one, several, or one worked out from the changed task (none when undefined). */
export type Carried = Progress | ReadonlyArray<Progress> | ((task: Task) => Progress | undefined)

/** `task.waiting`, for a change that leaves the task waiting (none if it does not: it ended meanwhile, say). */
export const waitingEvent = (task: Task): Progress | undefined =>
  task.status === "waiting" ? { type: "task.waiting", data: { waiting_for: task.waiting_for ?? [] } } : undefined

/** Finished tasks kept in memory besides the running ones: for quick reads and to rewrite after a storage crash. */
const recentFinished = 32

/** Records written this long before the connection was lost are written again (AOF `everysec` loses ~1 s). */
const rewriteWindowMs = 5_000

/**
 * The tasks of one session as this activation knows them: the running ones, and the few that finished last. Every
 * change is written to the store first and applied in memory only once written, so what memory answers is what is
 * durably recorded. Changes to one task are serialized; tasks change independently.
 */
export interface SessionTasks {
  /** The task's record: from memory, else from the store. */
  readonly record: (taskId: TaskId) => Effect.Effect<Option.Option<TaskRecord>, RedisError>
  /** The record of a task this activation holds (created, or read by `record` and still running). */
  readonly current: (taskId: TaskId) => TaskRecord
  /**
   * Records a new task and lists it in the session, with its `task.queued` event; `started` records it running at
   * once (a sync task that runs in its submit), with its `task.started` event too, in the same write.
   */
  readonly create: (record: TaskRecord, options?: { readonly started?: boolean }) => Effect.Effect<void>
  /**
   * Changes a task's record durably; a task reaching a terminal status gets its event, audit record and waiters.
   * `f` answering the record it was given changes (and writes) nothing.
   * `messages` join the session's conversation, and `event` (or events; or a function of the changed task, none when
   * it answers undefined) the task's event log, in the same write: one round trip, and an event is logged exactly when
   * its change is.
   */
  readonly update: (
    taskId: TaskId,
    f: (record: TaskRecord) => TaskRecord,
    options?: {
      readonly messages?: ReadonlyArray<ChatMessage>
      readonly event?: Carried
    }
  ) => Effect.Effect<Task>
  readonly updateTask: (
    taskId: TaskId,
    f: (task: Task) => Task,
    event?: Carried
  ) => Effect.Effect<Task>
  readonly updateStep: (
    taskId: TaskId,
    stepId: string,
    f: (step: Step) => Step,
    event?: Carried
  ) => Effect.Effect<Task>
  /** Makes sure a finished task's log has its terminal event (its writer may have died in between). */
  readonly ensureTerminalEvent: (task: Task) => Effect.Effect<void>
  /** Waits up to `ms` for the task to reach a terminal status, or to wait for something (`waiting`). */
  readonly awaitFinished: (taskId: TaskId, ms: number) => Effect.Effect<void>
}

export const make = (
  tenantId: TenantId,
  sessionId: SessionId,
  options: {
    /**
     * Keeps the session in memory (`Entity.keepAlive`) while records it wrote just before the store's connection was
     * lost wait to be written again: a session passivated meanwhile would forget them.
     */
    readonly keepAlive?: (enabled: boolean) => Effect.Effect<void>
  } = {}
): Effect.Effect<SessionTasks, never, TaskStore | EventLog | AuditLog | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const events = yield* EventLog
    const audit = yield* AuditLog

    type Entry = {
      record: TaskRecord
      readonly lock: Effect.Semaphore
      finished?: Deferred.Deferred<void>
      /** When this activation last wrote the record (0: never). */
      writtenAt: number
      /** Counted in this process's tasks in flight: held here and not finished. */
      inFlight: boolean
    }
    const entries = new Map<TaskId, Entry>()
    const finishedOrder: Array<TaskId> = []
    const entryOf = (record: TaskRecord): Entry => {
      const existing = entries.get(record.task.task_id)
      if (existing) return existing
      const inFlight = !isTerminal(record.task.status)
      const entry: Entry = { record, lock: Effect.unsafeMakeSemaphore(1), writtenAt: 0, inFlight }
      if (inFlight) taskMetrics.inFlight(1)
      entries.set(record.task.task_id, entry)
      return entry
    }
    const noteFinished = (taskId: TaskId) => {
      finishedOrder.push(taskId)
      while (finishedOrder.length > recentFinished) {
        const old = finishedOrder.shift()!
        const entry = entries.get(old)
        if (entry && isTerminal(entry.record.task.status)) entries.delete(old)
      }
    }

    /** A task's acceptance and its end are audited, with who asked and, at the end, how long it took. */
    const auditTask = (task: Task, type: TaskEventType) => {
      const terminal = type === "task.succeeded" || type === "task.failed" || type === "task.cancelled"
      if (type !== "task.queued" && !terminal) return Effect.void
      return Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
        audit.record({
          tenant_id: tenantId,
          ...(task.user_id ? { user: task.user_id } : {}),
          action: terminal ? "task.finished" : "task.accepted",
          target: `task:${task.task_id}`,
          outcome: type === "task.failed" ? "failed" : "ok",
          ...(terminal ? { latency_ms: nowMs - Date.parse(task.created_at) } : {}),
          details: {
            session_id: sessionId,
            ...(terminal ? { status: type.slice(5) } : {}),
            ...(terminal && task.error ? { error: task.error.code } : {})
          }
        }))
    }

    const body = (taskId: TaskId, at: string, progress: Progress): EventBody => ({
      type: progress.type,
      task_id: taskId,
      at,
      ...(progress.step_id !== undefined ? { step_id: progress.step_id } : {}),
      ...(progress.data !== undefined ? { data: progress.data } : {})
    })

    const terminalProgress = (task: Task): Progress => ({
      type: `task.${task.status}` as TaskEventType,
      data: task.status === "succeeded" ? { output: task.output } : { error: task.error }
    })

    /** The terminal event of a finished task whose log lacks it, and its audit record. */
    const terminalEvent = (task: Task) => {
      const progress = terminalProgress(task)
      return Effect.flatMap(now, (at) =>
        Effect.zipRight(
          durably(
            `event ${progress.type} of ${task.task_id}`,
            events.append(tenantId, task.task_id, body(task.task_id, at, progress))
          ),
          auditTask(task, progress.type)
        ))
    }

    const update: SessionTasks["update"] = (taskId, f, options) =>
      Effect.suspend(() => {
        const entry = entries.get(taskId)
        if (!entry) return Effect.dieMessage(`task ${taskId} is not held by its session`)
        // ended already (a plan's last step ended it, say): nothing to wait for the lock for. The end's own update may
        // still be recording its audit and metrics under the lock, as an unlocked read (`GetTask`) may find it too
        if (isTerminal(entry.record.task.status)) return Effect.succeed(entry.record.task)
        return entry.lock.withPermits(1)(Effect.gen(function*() {
          const previous = entry.record
          // a terminal status is final: whatever raced it (a cancel and a run, say) changes nothing more
          if (isTerminal(previous.task.status)) return previous.task
          const changed = f(previous)
          // nothing to change (a decision that no longer applies, say): nothing written
          if (changed === previous) return previous.task
          const at = yield* now
          const next: TaskRecord = { ...changed, task: { ...changed.task, updated_at: at } }
          const event = typeof options?.event === "function" ? options.event(next.task) : options?.event
          const ended = isTerminal(next.task.status) && !isTerminal(previous.task.status)
          const logged: Array<EventBody> = []
          if (Array.isArray(event)) {
            for (const e of event as ReadonlyArray<Progress>) logged.push(body(taskId, at, e))
          } else if (event) logged.push(body(taskId, at, event as Progress))
          if (ended) logged.push(body(taskId, at, terminalProgress(next.task)))
          const write = store.put(tenantId, next, {
            ...(options?.messages ? { messages: options.messages } : {}),
            ...(logged.length > 0 ? { events: logged } : {})
          })
          // the write's first attempt and what follows it are not cut short by an interruption (a cancel, a runner
          // stopping): a write sent is applied even if no one waits for it, and its events with it, so memory must hold
          // what it wrote (a cancel then goes on from there) and a task's end gets its audit record; retries after a
          // failure (an outage) stay interruptible
          return yield* Effect.uninterruptibleMask((restore) =>
            Effect.gen(function*() {
              yield* Effect.catchAll(write, (e) =>
                Effect.zipRight(
                  Effect.logWarning(`writing task ${taskId} failed, retrying: ${e.message}`),
                  restore(durably(`writing task ${taskId}`, write))
                ))
              entry.record = next
              entry.writtenAt = yield* Clock.currentTimeMillis
              // a waiting task has settled for now: whoever waits for it (a sync request) gets it as it is
              if (next.task.status === "waiting" && previous.task.status !== "waiting" && entry.finished) {
                yield* Deferred.succeed(entry.finished, void 0)
                delete entry.finished
              }
              if (ended) {
                if (entry.inFlight) taskMetrics.inFlight(-1)
                entry.inFlight = false
                yield* taskMetrics.finished(next.task.status, entry.writtenAt - Date.parse(next.task.created_at))
                yield* auditTask(next.task, terminalProgress(next.task).type)
                if (entry.finished) yield* Deferred.succeed(entry.finished, void 0)
                noteFinished(taskId)
              }
              return next.task
            })
          )
        }))
      })

    // what the server acknowledged just before it crashed may be lost (AOF `everysec`: its last second): write back
    // the records written shortly before the connection dropped; in the session's scope, so a session that moved
    // to another runner writes nothing more
    const scope = yield* Effect.scope
    // a session that stops (passivated, or its shard moved) no longer holds its unfinished tasks here
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const entry of entries.values()) {
          if (entry.inFlight) taskMetrics.inFlight(-1)
          entry.inFlight = false
        }
      })
    )
    // a session holding such records stays in memory until they are written again (its idle time may be shorter than
    // the outage); one at a time, so a release never overtakes the hold it ends
    let keptAlive = false
    const keeping = yield* Effect.makeSemaphore(1)
    const keepAlive = options.keepAlive && ((enabled: boolean) => keeping.withPermits(1)(options.keepAlive!(enabled)))
    if (keepAlive) {
      yield* store.onDisconnect((lostAt) =>
        Effect.suspend(() => {
          const since = lostAt - rewriteWindowMs
          if (keptAlive || ![...entries.values()].some((entry) => entry.writtenAt >= since)) return Effect.void
          keptAlive = true
          return keepAlive(true)
        })
      )
    }
    yield* store.onReconnect((lostAt) =>
      Effect.forkIn(
        Effect.gen(function*() {
          const since = lostAt - rewriteWindowMs
          yield* Effect.forEach(
            [...entries.values()].filter((entry) => entry.writtenAt >= since),
            (entry) =>
              entry.lock.withPermits(1)(
                Effect.suspend(() =>
                  durably(`rewriting task ${entry.record.task.task_id}`, store.put(tenantId, entry.record))
                )
              ),
            { discard: true }
          )
          if (keptAlive && keepAlive) {
            keptAlive = false
            yield* keepAlive(false)
          }
        }),
        scope
      )
    )

    return {
      record: (taskId) => {
        const entry = entries.get(taskId)
        if (entry) return Effect.succeed(Option.some(entry.record))
        return Effect.map(store.get(tenantId, taskId), (found) => {
          // a running task is held from now on, so its changes go through one place
          if (Option.isSome(found) && !isTerminal(found.value.task.status)) entryOf(found.value)
          return found
        })
      },
      current: (taskId) => entries.get(taskId)!.record,
      create: (accepted, options) =>
        Effect.gen(function*() {
          const taskId = accepted.task.task_id
          const at = yield* now
          const record: TaskRecord = options?.started
            ? { ...accepted, task: { ...accepted.task, status: "running", updated_at: at } }
            : accepted
          const logged = [body(taskId, at, { type: "task.queued" })]
          if (options?.started) logged.push(body(taskId, at, { type: "task.started" }))
          yield* durably(`recording task ${taskId}`, store.put(tenantId, record, { created: true, events: logged }))
          const entry = entryOf(record)
          entry.record = record
          entry.writtenAt = yield* Clock.currentTimeMillis
          yield* taskMetrics.accepted
          yield* auditTask(record.task, "task.queued")
        }),
      update,
      updateTask: (taskId, f, event) =>
        update(taskId, (r) => ({ ...r, task: f(r.task) }), event ? { event } : undefined),
      updateStep: (taskId, stepId, f, event) =>
        update(
          taskId,
          (r) => ({
            ...r,
            task: { ...r.task, steps: r.task.steps.map((s) => (s.id === stepId ? f(s) : s)) }
          }),
          event ? { event } : undefined
        ),
      ensureTerminalEvent: (task) =>
        Effect.gen(function*() {
          if (!isTerminal(task.status)) return
          const logged = yield* durably(`reading events of ${task.task_id}`, events.read(tenantId, task.task_id))
          if (!logged.some(isTerminalEvent)) yield* terminalEvent(task)
        }),
      awaitFinished: (taskId, ms) =>
        Effect.suspend(() => {
          const entry = entries.get(taskId)
          if (!entry || isTerminal(entry.record.task.status) || entry.record.task.status === "waiting") {
            return Effect.void
          }
          entry.finished ??= Deferred.unsafeMake<void>(FiberId.none)
          return Deferred.await(entry.finished).pipe(Effect.timeoutOption(ms), Effect.asVoid)
        })
    }
  })
