import { Connection } from "@altan/domain/Connection"
import { parseEntityId } from "@altan/domain/Ids"
import { ToolFailed, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * `Connection[tenant/provider]`: the tenant's relationship with one upstream. For now it forwards
 * each call to `ToolWorker[tenant/tool]`; credentials, budgets and retries live here as they land.
 */
export const ConnectionLive = Layer.unwrapEffect(Effect.map(ToolWorker.client, (toolWorker) =>
  Connection.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key: provider, tenantId } = parseEntityId(address.entityId)
      return Connection.of({
        Invoke: ({ payload }) =>
          toolWorker(`${tenantId}/${payload.tool_id}`).Execute({
            input: payload.input,
            ...(payload.task_id ? { task_id: payload.task_id } : {}),
            ...(payload.step_id ? { step_id: payload.step_id } : {})
          }).pipe(
            Effect.catchIf(
              (e) => e._tag === "MailboxFull" || e._tag === "AlreadyProcessingMessage" || e._tag === "PersistenceError",
              (e) =>
                new ToolFailed({
                  tool_id: payload.tool_id,
                  message: `the tool service could not take the call (${e._tag})`,
                  retryable: true
                })
            ),
            Effect.withSpan("Connection.invoke", {
              attributes: { "tenant.id": tenantId, provider, "tool.id": payload.tool_id }
            })
          )
      })
    }),
    { concurrency: "unbounded", maxIdleTime: "15 minutes" }
  )))
