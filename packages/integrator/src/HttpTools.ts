import { Api } from "@altan/domain/Api"
import { InvalidRequest, NotFound } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { CurrentPrincipal } from "@altan/domain/Principal"
import { catalogId, type ToolNotFound, ToolWorker } from "@altan/domain/ToolWorker"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import { orUnavailable } from "./internal/clusterCall.js"
import { requireAdmin } from "./internal/requireAdmin.js"

/** `/v1/tools`: built-in and the tenant's own tools, from the tenant's tool catalog. Any role reads; admins write. */
export const ToolsLive = HttpApiBuilder.group(Api, "tools", (handlers) =>
  Effect.gen(function*() {
    const workers = yield* ToolWorker.client
    const catalog = (tenantId: TenantId) => workers(catalogId(tenantId))
    const notFound = (e: ToolNotFound) => new NotFound({ message: `no tool ${e.tool_id}` })
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (payload.tool_id !== path.tool_id) {
            return yield* new InvalidRequest({
              message: `the body's tool_id "${payload.tool_id}" differs from the path's "${path.tool_id}"`,
              details: { field: "tool_id" }
            })
          }
          return yield* orUnavailable(catalog(tenantId).PutTool({ definition: payload }))
        }))
      .handle("list", () => Effect.flatMap(CurrentPrincipal, ({ tenantId }) => orUnavailable(catalog(tenantId).List())))
      .handle("get", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, ({ tenantId }) =>
          orUnavailable(catalog(tenantId).GetTool({ tool_id: path.tool_id })).pipe(
            Effect.catchTag("ToolNotFound", (e) =>
              Effect.fail(notFound(e)))
          )))
      .handle("delete", ({ path }) =>
        Effect.flatMap(requireAdmin, ({ tenantId }) =>
          orUnavailable(catalog(tenantId).DeleteTool({ tool_id: path.tool_id })).pipe(
            Effect.catchTag("ToolNotFound", (e) =>
              Effect.fail(notFound(e)))
          )))
  }))
