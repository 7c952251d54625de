import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Schema from "effect/Schema"
import { Conflict, InvalidRequest, NotFound } from "./Errors.js"
import { TaskId } from "./Ids.js"
import { Principal } from "./Principal.js"
import { SessionInfo, Task, TaskEvent, TaskRequest } from "./Task.js"

/** The task cannot run as asked: a bad plan, an unknown tool, no LLM configured. */
export const SubmitError = Schema.Union(InvalidRequest, Conflict)

/**
 * One tenant session: its context and its tasks. Entity id: `tenantId/sessionId`.
 *
 * `Submit` is persisted with the task id as primary key: an accepted task survives a runner
 * crash, and a repeated submit (same idempotency key, so same task id) answers the stored task.
 */
export const AgentSession = Entity.make("AgentSession", [
  Rpc.make("Submit", {
    payload: {
      task_id: TaskId,
      request: TaskRequest,
      principal: Principal,
      /** The LLMs to use, in order: the task's or tenant's default, then the tenant's fallbacks. */
      llms: Schema.Array(Schema.String)
    },
    success: Task,
    error: SubmitError,
    primaryKey: (p) => p.task_id
  }).annotate(ClusterSchema.Persisted, true),
  /** Runs an accepted task to its end; sent by the session to itself so execution is durable too. */
  Rpc.make("Run", {
    payload: { task_id: TaskId },
    success: Task,
    error: NotFound,
    primaryKey: (p) => p.task_id
  }).annotate(ClusterSchema.Persisted, true),
  /** The task; with `wait_ms`, waits up to that long for it to finish. */
  Rpc.make("GetTask", {
    payload: { task_id: TaskId, wait_ms: Schema.optional(Schema.Int) },
    success: Task,
    error: NotFound
  }),
  /** The task's events after `after` (a `Last-Event-ID`), then live ones; ends after the terminal event. */
  Rpc.make("Events", {
    payload: { task_id: TaskId, after: Schema.optional(Schema.String) },
    success: TaskEvent,
    error: NotFound,
    stream: true
  }),
  Rpc.make("Cancel", { payload: { task_id: TaskId }, success: Task, error: Schema.Union(NotFound, Conflict) }),
  Rpc.make("GetSession", { success: SessionInfo, error: NotFound }),
  Rpc.make("Reset")
]).annotate(ClusterSchema.ShardGroup, () => "agent")
