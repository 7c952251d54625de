import { InvalidRequest } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { summaryOf } from "@altan/domain/Task"
import { TenantTasks } from "@altan/domain/TenantTasks"
import * as Entity from "@effect/cluster/Entity"
import * as Effect from "effect/Effect"
import { TaskStore, unavailable } from "./TaskStore.js"

/** `TenantTasks[tenant]`: answers reads across the tenant's sessions from the task store; it keeps nothing itself. */
export const TenantTasksLive = TenantTasks.toLayer(
  Effect.gen(function*() {
    const tenantId = (yield* Entity.CurrentAddress).entityId as string as TenantId
    const store = yield* TaskStore
    return TenantTasks.of({
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
