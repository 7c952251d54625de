import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Schema from "effect/Schema"
import { ToolError, ToolResult } from "./ToolWorker.js"

/**
 * A tenant's relationship with one upstream provider (credentials, budget, retries).
 * Entity id: `tenantId/provider`.
 */
export const Connection = Entity.make("Connection", [
  Rpc.make("Invoke", {
    payload: {
      tool_id: Schema.String,
      input: Schema.Unknown,
      task_id: Schema.optional(Schema.String),
      step_id: Schema.optional(Schema.String)
    },
    success: ToolResult,
    error: ToolError
  })
]).annotate(ClusterSchema.ShardGroup, () => "integrator")
