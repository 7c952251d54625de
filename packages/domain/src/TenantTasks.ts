import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Schema from "effect/Schema"
import { ApprovalPage } from "./Approval.js"
import { InvalidRequest, Unavailable } from "./Errors.js"
import { SessionId } from "./Ids.js"
import { TaskPage, TaskStatus } from "./Task.js"

/**
 * Reads across a tenant's sessions, which no one session can answer. Entity id: the tenant id. It holds nothing:
 * each read goes to the agent's stores.
 */
export const TenantTasks = Entity.make("TenantTasks", [
  /** The tenant's calls waiting for approval, oldest request first. */
  Rpc.make("PendingApprovals", {
    payload: { cursor: Schema.optional(Schema.String), limit: Schema.Int },
    success: ApprovalPage,
    error: Unavailable
  }),
  /** The tenant's tasks, newest first, optionally of one session or status. */
  Rpc.make("ListTasks", {
    payload: {
      session_id: Schema.optional(SessionId),
      status: Schema.optional(TaskStatus),
      cursor: Schema.optional(Schema.String),
      limit: Schema.Int
    },
    success: TaskPage,
    error: Schema.Union(Unavailable, InvalidRequest)
  }),
  /**
   * The tenant's connection to `provider` can be used now (its OAuth2 consent completed, its secret stored): every
   * task of the tenant whose call waits for it goes on. Persisted (`id` is unique per notice): once the integrator
   * stored it, the waiting tasks are woken, also if an agent runner dies meanwhile.
   */
  Rpc.make("ConnectionReady", {
    payload: { provider: Schema.String, id: Schema.String },
    primaryKey: (p) => `${p.provider}/${p.id}`
  }).annotate(ClusterSchema.Persisted, true),
  /**
   * The tenant's budgets changed (an admin raised or removed a limit): every task waiting for a spent budget looks
   * again, and goes on where its budget allows now. Persisted like `ConnectionReady`.
   */
  Rpc.make("BudgetsChanged", {
    payload: { id: Schema.String },
    primaryKey: (p) => `budgets/${p.id}`
  }).annotate(ClusterSchema.Persisted, true)
]).annotate(ClusterSchema.ShardGroup, () => "agent")
