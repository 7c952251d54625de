/**
 * The engine's floor under a one-step task, in a process of its own (started by `serveFloor` in ../harness.ts): what
 * the stack costs with none of our work in it. `POST /v1/tasks` is an `HttpApi` endpoint with the API's request and
 * answer schemas (`TaskRequest`, `Task` for 200 and 202) on a `NodeHttpServer`; its handler sends one persisted
 * message with `AgentSession.Submit`'s schemas and a payload of the same fields the edge sends (`SubmitPayload`,
 * `Task`) to a new entity (a new session id, as a task without one gets), with `AgentSession`'s shard group and entity
 * options, on the embedded runtime's sharding (`ShardingMemory`, our memory message storage); the entity answers the
 * task a one-step plan answers, built from the payload. With `FLOOR_MODE=http` the endpoint answers that task itself,
 * without the message. No token check (nor the API's other middleware), session, task records, events, audit, metrics
 * or tool: a task's CPU beyond this server's is ours (or the API's middleware's). It sends `{base}` over IPC when ready
 * and its CPU time (ms) when asked `"cpu"`.
 */
import * as AgentConfig from "@altan/agent/AgentConfig"
import { SubmitError, SubmitPayload } from "@altan/domain/AgentSession"
import type { SessionId, TaskId, TenantId, UserId } from "@altan/domain/Ids"
import { Principal } from "@altan/domain/Principal"
import { emptyUsage, Task, TaskRequest } from "@altan/domain/Task"
import { TextTemplate } from "@altan/tool/builtin/Text"
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Rpc from "@effect/rpc/Rpc"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import { ShardingMemory } from "../../packages/cluster/src/Runtime.js"

const Floor = Entity.make("BenchFloor", [
  Rpc.make("Submit", {
    payload: SubmitPayload.fields,
    success: Task,
    error: SubmitError,
    primaryKey: (p) => p.task_id
  }).annotate(ClusterSchema.Persisted, true).annotate(ClusterSchema.Uninterruptible, "client")
]).annotate(ClusterSchema.ShardGroup, () => "agent")

/** The answer of a one-step plan, as the runtime gives it, built from the submit. */
const answer = (payload: SubmitPayload): Task => {
  const now = new Date().toISOString()
  const plan = payload.request.input as { steps: ReadonlyArray<{ id: string; tool: string; input: unknown }> }
  return {
    task_id: payload.task_id,
    session_id: payload.task_id.split(".")[0]! as SessionId,
    status: "succeeded",
    input: payload.request.input,
    output: { text: "hi x" },
    steps: plan.steps.map((step) => ({
      id: step.id,
      tool: step.tool,
      status: "succeeded",
      input: step.input,
      output: { text: "hi x" },
      attempts: 1,
      cached: false,
      started_at: now,
      finished_at: now,
      duration_ms: 0.1
    })),
    usage: { ...emptyUsage, tool_calls: 1 },
    mode: payload.request.mode,
    timeout_ms: payload.request.timeout_ms,
    user_id: payload.principal.userId,
    created_at: payload.accepted_at,
    updated_at: now
  }
}

const FloorLive = Floor.toLayer(
  Effect.succeed({ Submit: ({ payload }) => Effect.sync(() => answer(payload)) }),
  { concurrency: "unbounded", maxIdleTime: AgentConfig.defaults.sessionMaxIdleTime, disableFatalDefects: true }
)

class FloorGroup extends HttpApiGroup.make("floor").add(
  HttpApiEndpoint.post("create", "/v1/tasks").setPayload(TaskRequest).addSuccess(Task).addSuccess(Task, {
    status: 202
  })
) {}
class FloorApi extends HttpApi.make("floor").add(FloorGroup) {}

const principal = new Principal({ tenantId: "bench" as TenantId, userId: "bench" as UserId, role: "admin" })

const FloorHttp = HttpApiBuilder.group(FloorApi, "floor", (handlers) =>
  Effect.gen(function*() {
    const client = yield* Floor.client
    const withMessage = process.env["FLOOR_MODE"] !== "http"
    return handlers.handle("create", ({ payload }) => {
      const session = `ses_${randomBytes(12).toString("base64url")}`
      const taskId = `${session}.${randomBytes(12).toString("base64url")}` as TaskId
      const submit = {
        task_id: taskId,
        request: payload,
        principal,
        llms: [],
        specs: [TextTemplate.spec],
        on_unknown_outcome: "fail" as const,
        accepted_at: new Date().toISOString(),
        approval_required: [],
        approval_timeout_ms: 86_400_000,
        connection_timeout_ms: 86_400_000
      }
      if (!withMessage) return Effect.sync(() => answer(submit))
      return client(`bench/${session}`).Submit(submit).pipe(Effect.orDie)
    })
  }))

const layer = HttpApiBuilder.serve().pipe(
  Layer.provide(HttpApiBuilder.api(FloorApi).pipe(Layer.provide(FloorHttp))),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
  Layer.provide(FloorLive),
  Layer.provide(ShardingMemory({ simulateRemoteSerialization: false }))
)

const scope = Effect.runSync(Scope.make())
const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
const address = (context.unsafeMap.get(HttpServer.HttpServer.key) as HttpServer.HttpServer)
  .address as HttpServer.TcpAddress
process.send!({ base: `http://127.0.0.1:${address.port}` })
process.on("message", (message: unknown) => {
  if (message === "cpu") {
    const { system, user } = process.cpuUsage()
    process.send!({ cpu: (user + system) / 1000 })
  }
})
process.on("disconnect", () => process.exit(0))
// exits, not killed, so a profile (`--cpu-prof`) is written
process.on("SIGTERM", () => process.exit(0))
