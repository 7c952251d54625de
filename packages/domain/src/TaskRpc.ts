import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as Socket from "@effect/platform/Socket"
import * as Rpc from "@effect/rpc/Rpc"
import * as RpcClient from "@effect/rpc/RpcClient"
import type { RpcClientError } from "@effect/rpc/RpcClientError"
import * as RpcGroup from "@effect/rpc/RpcGroup"
import * as RpcMiddleware from "@effect/rpc/RpcMiddleware"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { ApproveRequest, RejectRequest } from "./Approval.js"
import { Conflict, Forbidden, InvalidRequest, NotFound, TooManyRequests, Unauthorized, Unavailable } from "./Errors.js"
import { SessionId, TaskId } from "./Ids.js"
import { CurrentPrincipal } from "./Principal.js"
import { SessionInfo, Task, TaskEvent, TaskRequest } from "./Task.js"

/**
 * Verifies the `authorization: Bearer <JWT>` header of every RPC request, exactly like the HTTP API's
 * `Authentication`, and provides the caller's `Principal`. Over websockets the header may come with the
 * upgrade request or with each request (the latter wins).
 */
export class RpcAuthentication extends RpcMiddleware.Tag<RpcAuthentication>()("RpcAuthentication", {
  provides: CurrentPrincipal,
  failure: Unauthorized
}) {}

/**
 * The task API of `/v1/tasks` and `/v1/sessions` as RPC, served by the integrator at `/rpc` (HTTP POST)
 * and `/rpc/ws` (websocket), both with ndjson serialization. Same payloads, same errors, same tenant
 * scoping as HTTP: the tenant comes only from the token.
 */
export class TaskRpcs extends RpcGroup.make(
  /** `POST /v1/tasks`: in sync mode (the default) answers once the task finished or `timeout_ms` passed. */
  Rpc.make("SubmitTask", {
    payload: TaskRequest,
    success: Task,
    error: Schema.Union(InvalidRequest, Conflict, NotFound, Unavailable, TooManyRequests)
  }),
  /** `GET /v1/tasks/{task_id}`. */
  Rpc.make("GetTask", {
    payload: { task_id: TaskId },
    success: Task,
    error: Schema.Union(NotFound, Unavailable, TooManyRequests)
  }),
  /** `POST /v1/tasks/{task_id}/cancel`: `Conflict` once the task has finished. */
  Rpc.make("CancelTask", {
    payload: { task_id: TaskId },
    success: Task,
    error: Schema.Union(NotFound, Conflict, Unavailable)
  }),
  /** `POST /v1/tasks/{task_id}/steps/{step_id}/approve`. */
  Rpc.make("ApproveStep", {
    payload: { task_id: TaskId, step_id: Schema.String, ...ApproveRequest.fields },
    success: Task,
    error: Schema.Union(NotFound, Forbidden, Conflict, InvalidRequest, Unavailable)
  }),
  /** `POST /v1/tasks/{task_id}/steps/{step_id}/reject`. */
  Rpc.make("RejectStep", {
    payload: { task_id: TaskId, step_id: Schema.String, ...RejectRequest.fields },
    success: Task,
    error: Schema.Union(NotFound, Forbidden, Conflict, InvalidRequest, Unavailable)
  }),
  /** `GET /v1/tasks/{task_id}/events`: the events after `after` (an event id), then live ones, up to the terminal event. */
  Rpc.make("TaskEvents", {
    payload: { task_id: TaskId, after: Schema.optional(Schema.String.pipe(Schema.maxLength(256))) },
    success: TaskEvent,
    error: Schema.Union(NotFound, Unavailable),
    stream: true
  }),
  /** `GET /v1/sessions/{session_id}`. */
  Rpc.make("GetSession", {
    payload: { session_id: SessionId },
    success: SessionInfo,
    error: Schema.Union(NotFound, Unavailable)
  }),
  /** `DELETE /v1/sessions/{session_id}`: clears the session's context. */
  Rpc.make("ResetSession", { payload: { session_id: SessionId }, error: Unavailable })
).middleware(RpcAuthentication) {}

/** The typed client of `TaskRpcs`. */
export type TaskRpcClient = RpcClient.FromGroup<typeof TaskRpcs, RpcClientError>

export interface RpcClientOptions {
  /** The endpoint: `http(s)://<host>/rpc` for the HTTP protocol, `ws(s)://<host>/rpc/ws` for websockets. */
  readonly url: string
  /** The bearer token sent with every request. */
  readonly token: string | Redacted.Redacted<string>
  /** `http` (default): one POST per call, streams over a streamed response; `websocket`: one connection. */
  readonly protocol?: "http" | "websocket" | undefined
}

/** Adds `authorization: Bearer <token>` to every request of a `TaskRpcs` client. */
export const layerAuthorization = (
  token: string | Redacted.Redacted<string>
): Layer.Layer<RpcMiddleware.ForClient<RpcAuthentication>> => {
  const authorization = `Bearer ${Redacted.isRedacted(token) ? Redacted.value(token) : token}`
  return RpcMiddleware.layerClient(
    RpcAuthentication,
    ({ request }) =>
      Effect.succeed({ ...request, headers: Headers.set(request.headers, "authorization", authorization) })
  )
}

/**
 * The client side of the integrator's RPC endpoints, without authentication (see `layerAuthorization`).
 * Over HTTP an answer that is not an RPC response (413 over the body limit, a proxy's 502) fails the
 * call with an `RpcClientError`.
 */
export const layerProtocol = (
  options: Pick<RpcClientOptions, "url" | "protocol">
): Layer.Layer<RpcClient.Protocol, never, HttpClient.HttpClient | Socket.WebSocketConstructor> => {
  const protocol: Layer.Layer<
    RpcClient.Protocol,
    never,
    RpcSerialization.RpcSerialization | HttpClient.HttpClient | Socket.WebSocketConstructor
  > = options.protocol === "websocket"
    ? RpcClient.layerProtocolSocket().pipe(Layer.provide(Socket.layerWebSocket(options.url)))
    // a non-2xx answer fails the request, which the protocol turns into an RpcClientError
    : RpcClient.layerProtocolHttp({ url: options.url }).pipe(
      Layer.provide(Layer.effect(HttpClient.HttpClient, Effect.map(HttpClient.HttpClient, HttpClient.filterStatusOk)))
    )
  return Layer.provide(protocol, RpcSerialization.layerNdjson)
}

/**
 * A typed client of the task RPCs for service-to-service callers. The HTTP protocol needs an
 * `HttpClient` (e.g. `FetchHttpClient.layer`), the websocket one a `Socket.WebSocketConstructor`
 * (`NodeSocket.layerWebSocketConstructor` on Node 20, `Socket.layerWebSocketConstructorGlobal` elsewhere).
 * The connection lives as long as the scope.
 */
export const makeRpcClient: {
  (options: RpcClientOptions & { readonly protocol?: "http" | undefined }): Effect.Effect<
    TaskRpcClient,
    never,
    Scope.Scope | HttpClient.HttpClient
  >
  (options: RpcClientOptions & { readonly protocol: "websocket" }): Effect.Effect<
    TaskRpcClient,
    never,
    Scope.Scope | Socket.WebSocketConstructor
  >
} = (options: RpcClientOptions): Effect.Effect<TaskRpcClient, never, any> =>
  Effect.flatMap(
    Layer.build(Layer.merge(layerProtocol(options), layerAuthorization(options.token))),
    (context) => Effect.provide(RpcClient.make(TaskRpcs), context)
  )
