import type { AuditLog } from "@altan/audit/AuditLog"
import { CurrentPrincipal } from "@altan/domain/Principal"
import { TaskRpcs } from "@altan/domain/TaskRpc"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as RpcServer from "@effect/rpc/RpcServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Authentication from "./Authentication.js"
import { IntegratorConfig } from "./IntegratorConfig.js"
import { Tasks } from "./Tasks.js"
import type { TokenVerifier } from "./TokenVerifier.js"

/** The task RPCs, answered by the same `Tasks` as the HTTP handlers. */
export const TaskRpcsLive = TaskRpcs.toLayer(Effect.gen(function*() {
  const tasks = yield* Tasks
  return TaskRpcs.of({
    SubmitTask: (request) => Effect.flatMap(CurrentPrincipal, (principal) => tasks.submit(principal, request)),
    GetTask: ({ task_id }) => Effect.flatMap(CurrentPrincipal, (principal) => tasks.get(principal, task_id)),
    CancelTask: ({ task_id }) => Effect.flatMap(CurrentPrincipal, (principal) => tasks.cancel(principal, task_id)),
    ApproveStep: ({ step_id, task_id, ...approval }) =>
      Effect.flatMap(
        CurrentPrincipal,
        (principal) => tasks.decide(principal, task_id, step_id, { _tag: "Approve", ...approval })
      ),
    RejectStep: ({ step_id, task_id, ...rejection }) =>
      Effect.flatMap(
        CurrentPrincipal,
        (principal) => tasks.decide(principal, task_id, step_id, { _tag: "Reject", ...rejection })
      ),
    TaskEvents: ({ after, task_id }) =>
      Stream.unwrap(Effect.flatMap(CurrentPrincipal, (principal) => tasks.events(principal, task_id, after))),
    GetSession: ({ session_id }) =>
      Effect.flatMap(CurrentPrincipal, (principal) => tasks.getSession(principal, session_id)),
    ResetSession: ({ session_id }) =>
      Effect.flatMap(CurrentPrincipal, (principal) => tasks.resetSession(principal, session_id))
  })
}))

/**
 * The task RPCs on the API's router, beside the HTTP API and behind the same edge (body limit, forwarded
 * headers): `POST /rpc` (HTTP protocol) and `GET /rpc/ws` (websocket), both ndjson. A websocket message
 * over `MAX_BODY_BYTES` closes the connection (1009).
 */
export const RpcLive: Layer.Layer<never, never, IntegratorConfig | Tasks | TokenVerifier | AuditLog> = Layer
  .unwrapEffect(
    Effect.map(IntegratorConfig, ({ maxBodyBytes }) => {
      const server = (protocol: Layer.Layer<RpcServer.Protocol, never, RpcSerialization.RpcSerialization>) =>
        RpcServer.layer(TaskRpcs, { spanPrefix: "TaskRpcs" }).pipe(
          Layer.provide(protocol),
          Layer.provide(RpcSerialization.layerNdjsonWith({ maxBufferSize: maxBodyBytes }))
        )
      return Layer.mergeAll(
        server(RpcServer.layerProtocolHttp({ path: "/rpc", routerTag: HttpApiBuilder.Router })),
        server(RpcServer.layerProtocolWebsocket({ path: "/rpc/ws", routerTag: HttpApiBuilder.Router }))
      ).pipe(Layer.provide(TaskRpcsLive), Layer.provide(Authentication.layerRpc))
    })
  )
