import type { TenantId } from "@altan/domain/Ids"
import type { TenantTasks } from "@altan/domain/TenantTasks"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { randomUUID } from "node:crypto"

/**
 * Tells the agent that the tenant's connection to `provider` can be used now: every task whose call waits for it goes
 * on. Stored by the cluster before this returns (retried a few times); should the cluster not take it, the failure
 * is logged and the tasks wait on (a later notice, or their `connection_timeout`): the change itself stands.
 */
export const notifyConnectionReady = (
  client: Effect.Effect.Success<typeof TenantTasks.client>,
  tenantId: TenantId,
  provider: string
) =>
  client(tenantId).ConnectionReady({ provider, id: randomUUID() }, { discard: true }).pipe(
    Effect.retry({ times: 4, schedule: Schedule.exponential("200 millis") }),
    Effect.catchAllCause((cause) =>
      Effect.logWarning(`could not wake the tasks waiting for the ${provider} connection`, cause).pipe(
        Effect.annotateLogs({ "tenant.id": tenantId, provider })
      )
    ),
    Effect.withSpan("Connection.notifyReady", {
      attributes: { "altan.tenant_id": tenantId, "altan.provider": provider }
    })
  )

/** Tells the agent that the tenant's budgets changed: every task waiting for a spent budget looks again. */
export const notifyBudgetsChanged = (client: Effect.Effect.Success<typeof TenantTasks.client>, tenantId: TenantId) =>
  client(tenantId).BudgetsChanged({ id: randomUUID() }, { discard: true }).pipe(
    Effect.retry({ times: 4, schedule: Schedule.exponential("200 millis") }),
    Effect.catchAllCause((cause) =>
      Effect.logWarning("could not wake the tasks waiting for a budget", cause).pipe(
        Effect.annotateLogs({ "tenant.id": tenantId })
      )
    ),
    Effect.withSpan("Settings.notifyBudgetsChanged", { attributes: { "altan.tenant_id": tenantId } })
  )
