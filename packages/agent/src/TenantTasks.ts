import { AgentSession } from "@altan/domain/AgentSession"
import { InvalidRequest } from "@altan/domain/Errors"
import { entityId, type TenantId } from "@altan/domain/Ids"
import { summaryOf } from "@altan/domain/Task"
import { TenantTasks } from "@altan/domain/TenantTasks"
import { AlreadyProcessingMessage } from "@effect/cluster/ClusterError"
import * as Entity from "@effect/cluster/Entity"
import * as Effect from "effect/Effect"
import { backoff, durably } from "./SessionTasks.js"
import { TaskStore, unavailable, waitSubject } from "./TaskStore.js"

/** `TenantTasks[tenant]`: answers reads across the tenant's sessions from the task store; it keeps nothing itself. */
export const TenantTasksLive = TenantTasks.toLayer(
  Effect.gen(function*() {
    const tenantId = (yield* Entity.CurrentAddress).entityId as string as TenantId
    const store = yield* TaskStore
    const sessions = yield* AgentSession.client
    /** A `Run` per wait on `subject`, keyed by the wait and the notice: a later notice wakes the same wait again. */
    const wake = (subject: string, noticeId: string) =>
      Effect.gen(function*() {
        const waits = yield* durably(`reading the tasks waiting on ${subject}`, store.waitsOn(tenantId, subject))
        yield* Effect.forEach(waits, (wait) =>
          sessions(entityId(tenantId, wait.task_id.slice(0, wait.task_id.lastIndexOf(".")))).Run(
            { task_id: wait.task_id, after: `${wait.step_id}@${wait.since}#${noticeId}` },
            { discard: true }
          ).pipe(
            Effect.catchIf(AlreadyProcessingMessage.is, () =>
              Effect.void),
            Effect.tapError((e) => Effect.logWarning(`waking task ${wait.task_id} failed, retrying: ${e._tag}`)),
            Effect.retry(backoff),
            Effect.orDie
          ), { concurrency: 16, discard: true })
      })
    return TenantTasks.of({
      /**
       * Wakes every task whose call waits for the connection: a `Run` per wait (`<step>@<since>#<notice>`), stored
       * before this answers, so the notice is done once every waiting task has its wake; a redelivered notice wakes
       * nothing twice, a new one wakes again what still waits.
       */
      ConnectionReady: Effect.fn("TenantTasks.connectionReady", { captureStackTrace: false })(({ payload }) =>
        wake(waitSubject.connection(payload.provider), payload.id)
      ),
      /** Wakes every task waiting for a spent budget, the same way: each looks again at what it may spend now. */
      BudgetsChanged: Effect.fn("TenantTasks.budgetsChanged", { captureStackTrace: false })(({ payload }) =>
        wake(waitSubject.budget, payload.id)
      ),
      PendingApprovals: Effect.fn("TenantTasks.pendingApprovals", { captureStackTrace: false })(({ payload }) =>
        store.pendingApprovals(tenantId, payload.cursor, payload.limit).pipe(
          Effect.map(({ entries, next }) => ({ approvals: entries, ...(next ? { next_cursor: next } : {}) })),
          Effect.mapError(unavailable)
        )
      ),
      ListTasks: Effect.fn("TenantTasks.listTasks", { captureStackTrace: false })(({ payload }) =>
        store.listTasks(tenantId, {
          sessionId: payload.session_id,
          status: payload.status,
          cursor: payload.cursor,
          limit: payload.limit
        }).pipe(
          Effect.mapError(unavailable),
          Effect.flatMap((page) =>
            page === undefined
              ? Effect.fail(
                new InvalidRequest({
                  message: "cursor is not one this API gave: pass the next_cursor of the previous page",
                  details: { field: "cursor" }
                })
              )
              : Effect.succeed({
                tasks: page.tasks.map(summaryOf),
                ...(page.next ? { next_cursor: page.next } : {})
              })
          )
        )
      )
    })
  }),
  { concurrency: "unbounded", maxIdleTime: "1 minute" }
)
