import { AgentSession } from "@altan/domain/AgentSession"
import { Api } from "@altan/domain/Api"
import { Forbidden, InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import { type SessionId, sessionOfTask, type TaskId } from "@altan/domain/Ids"
import { CurrentPrincipal, type Principal } from "@altan/domain/Principal"
import { isTerminal, Task, type TaskRequest } from "@altan/domain/Task"
import { catalogId, type ToolNotFound, ToolWorker } from "@altan/domain/ToolWorker"
import type { AlreadyProcessingMessage, MailboxFull, PersistenceError } from "@effect/cluster/ClusterError"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import { HttpApiDecodeError } from "@effect/platform/HttpApiError"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMethod from "@effect/platform/HttpMethod"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import type { Readable } from "node:stream"
import { AuthenticationLive } from "./Auth.js"
import { ConnectionStore } from "./ConnectionStore.js"
import { IntegratorConfig } from "./IntegratorConfig.js"
import * as Readiness from "./Readiness.js"
import { SecretStore, type SecretStoreError } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

const random = () => randomBytes(12).toString("base64url")
const digest = (...parts: ReadonlyArray<string>) =>
  createHash("sha256").update(parts.join("\u0000")).digest("base64url").slice(0, 24)

/**
 * Ids of a new task. With an idempotency key both are derived from it, so a repeat lands on the same
 * persisted `Submit` and answers the task it created.
 */
export const taskIds = (tenantId: string, sessionId: string | undefined, key: string | undefined) => {
  const session = sessionId ?? (key ? `k${digest(tenantId, key)}` : `ses_${random()}`)
  const task = key ? `${session}.k${digest(tenantId, session, key)}` : `${session}.${random()}`
  return { sessionId: session as SessionId, taskId: task as TaskId }
}

/** Cluster delivery failures are the runtime's, not the caller's: 503. */
type ClusterError = MailboxFull | AlreadyProcessingMessage | PersistenceError
const isClusterError = (e: { readonly _tag: string }): boolean =>
  e._tag === "MailboxFull" || e._tag === "AlreadyProcessingMessage" || e._tag === "PersistenceError"

/** How long the edge waits for the agent service beyond any wait the request itself asked for. */
const callTimeout = Duration.seconds(15)

/**
 * Bounds a call into the cluster: while no runner owns the session's shard, the cluster retries
 * delivery indefinitely, and the caller gets a 503 rather than a hung request.
 */
const orUnavailable = <A, E extends { readonly _tag: string }, R>(
  effect: Effect.Effect<A, E, R>,
  extraWait: Duration.DurationInput = 0
): Effect.Effect<A, Exclude<E, ClusterError> | Unavailable, R> =>
  effect.pipe(
    Effect.catchIf(isClusterError, (e) =>
      Effect.fail(
        new Unavailable({ message: `the agent service could not take the request (${e._tag}); retry later` })
      )),
    Effect.timeoutFail({
      duration: Duration.sum(callTimeout, extraWait),
      onTimeout: () => new Unavailable({ message: "the agent service did not answer in time; retry later" })
    })
  ) as any

const encodeTask = HttpServerResponse.schemaJson(Task)

/** Configuration routes are for the tenant's admins. */
const requireAdmin = Effect.flatMap(CurrentPrincipal, (principal) =>
  principal.role === "admin"
    ? Effect.succeed(principal)
    : Effect.fail(new Forbidden({ message: "this route needs the admin role" })))

/**
 * The LLMs a natural-language task will use, in order: the task's `llm_id` or the tenant's
 * `default_llm`, then the configured `fallback_llms`. Resolved here, where tenant configuration lives.
 */
const resolveLlms = (config: TenantConfig["Type"], principal: Principal, request: TaskRequest) =>
  Effect.gen(function*() {
    // a plan needs an LLM only for its text.generate steps, which use the tenant's default unless llm_id says otherwise
    if (typeof request.input !== "string" && request.llm_id === undefined) return []
    const settings = yield* config.getSettings(principal.tenantId)
    const primary = request.llm_id ?? settings.default_llm
    if (!primary) {
      return yield* new InvalidRequest({
        code: "llm_not_configured",
        message: "natural-language tasks need an LLM: configure one (PUT /v1/llms/{llm_id}) and set default_llm " +
          "(PUT /v1/settings), or pass llm_id",
        details: { field: "input" }
      })
    }
    if (Option.isNone(yield* config.getLlm(principal.tenantId, primary))) {
      return yield* new InvalidRequest({
        code: "unknown_llm",
        message: `no LLM "${primary}" is configured for this tenant`,
        details: { field: request.llm_id ? "llm_id" : "settings.default_llm" }
      })
    }
    const fallbacks: Array<string> = []
    for (const id of settings.fallback_llms) {
      if (id !== primary && Option.isSome(yield* config.getLlm(principal.tenantId, id))) fallbacks.push(id)
    }
    return [primary, ...fallbacks]
  })

const TasksLive = HttpApiBuilder.group(Api, "tasks", (handlers) =>
  Effect.gen(function*() {
    const sessions = yield* AgentSession.client
    const config = yield* TenantConfig
    return handlers
      .handle("create", ({ payload }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          const { sessionId, taskId } = taskIds(principal.tenantId, payload.session_id, payload.idempotency_key)
          const session = sessions(`${principal.tenantId}/${sessionId}`)
          const llms = yield* resolveLlms(config, principal, payload)
          // The submit is persisted: if it times out here it may still run once delivered.
          const accepted = yield* orUnavailable(session.Submit({ task_id: taskId, request: payload, principal, llms }))
            .pipe(
              Effect.mapError((e) =>
                e._tag === "Unavailable"
                  ? new Unavailable({
                    message:
                      `${e.message}; the task may still run: read it by its id, or repeat with the same idempotency_key`,
                    details: { task_id: taskId, session_id: sessionId }
                  })
                  : e
              )
            )
          const task = payload.mode === "sync" && !isTerminal(accepted.status)
            ? yield* orUnavailable(
              session.GetTask({ task_id: taskId, wait_ms: payload.timeout_ms }),
              payload.timeout_ms
            )
            : accepted
          if (isTerminal(task.status)) return task
          return yield* Effect.orDie(encodeTask(task, { status: 202 }))
        }))
      .handle("get", ({ path }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          return yield* sessions(`${principal.tenantId}/${sessionOfTask(path.task_id)}`).GetTask({
            task_id: path.task_id
          })
        }).pipe(orUnavailable))
      .handle("events", ({ headers, path }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          const session = sessions(`${principal.tenantId}/${sessionOfTask(path.task_id)}`)
          // the task must exist before the stream starts, so a wrong id is a 404, not an empty stream
          yield* orUnavailable(session.GetTask({ task_id: path.task_id }))
          const events = session.Events({
            task_id: path.task_id,
            ...(headers["last-event-id"] ? { after: headers["last-event-id"] } : {})
          }).pipe(
            Stream.map((e) => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`),
            // comments keep idle connections open through proxies; they stop with the events
            Stream.merge(Stream.tick("15 seconds").pipe(Stream.map(() => ": keep-alive\n\n")), {
              haltStrategy: "left"
            }),
            Stream.catchAll((e) =>
              Stream.make(
                `event: error\ndata: ${JSON.stringify({ error: { code: "unavailable", message: e._tag } })}\n\n`
              )
            ),
            Stream.encodeText
          )
          return HttpServerResponse.stream(events, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })
        }))
      .handle("cancel", ({ path }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          return yield* sessions(`${principal.tenantId}/${sessionOfTask(path.task_id)}`).Cancel({
            task_id: path.task_id
          })
        }).pipe(orUnavailable))
  }))

const SessionsLive = HttpApiBuilder.group(Api, "sessions", (handlers) =>
  Effect.gen(function*() {
    const sessions = yield* AgentSession.client
    return handlers
      .handle("get", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          sessions(`${principal.tenantId}/${path.session_id}`).GetSession()).pipe(orUnavailable))
      .handle("reset", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          sessions(`${principal.tenantId}/${path.session_id}`).Reset()).pipe(orUnavailable))
  }))

const LlmsLive = HttpApiBuilder.group(Api, "llms", (handlers) =>
  Effect.gen(function*() {
    const config = yield* TenantConfig
    const notFound = (llmId: string) => new NotFound({ message: `no LLM "${llmId}"` })
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (payload.llm_id !== path.llm_id) {
            return yield* new InvalidRequest({
              message: `the body's llm_id "${payload.llm_id}" differs from the path's "${path.llm_id}"`,
              details: { field: "llm_id" }
            })
          }
          yield* config.putLlm(tenantId, payload)
          return payload
        }))
      .handle("get", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          return yield* Effect.flatMap(
            config.getLlm(tenantId, path.llm_id),
            Option.match({
              onNone: () => Effect.fail(notFound(path.llm_id)),
              onSome: Effect.succeed
            })
          )
        }))
      .handle("list", () => Effect.flatMap(requireAdmin, ({ tenantId }) => config.listLlms(tenantId)))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* config.deleteLlm(tenantId, path.llm_id))) return yield* notFound(path.llm_id)
        }))
  }))

const SettingsLive = HttpApiBuilder.group(Api, "settings", (handlers) =>
  Effect.gen(function*() {
    const config = yield* TenantConfig
    return handlers
      .handle("put", ({ payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          for (
            const [field, id] of [
              ["default_llm", payload.default_llm],
              ...payload.fallback_llms.map((id, i) => [`fallback_llms.${i}`, id] as const)
            ] as const
          ) {
            if (id !== undefined && Option.isNone(yield* config.getLlm(tenantId, id))) {
              return yield* new InvalidRequest({
                code: "unknown_llm",
                message: `no LLM "${id}" is configured`,
                details: { field }
              })
            }
          }
          yield* config.putSettings(tenantId, payload)
          return payload
        }))
      .handle("get", () => Effect.flatMap(requireAdmin, ({ tenantId }) => config.getSettings(tenantId)))
  }))

const secretsUnavailable = (e: SecretStoreError) => new Unavailable({ message: e.message })

const SecretsLive = HttpApiBuilder.group(Api, "secrets", (handlers) =>
  Effect.gen(function*() {
    const secrets = yield* SecretStore
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.flatMap(requireAdmin, ({ tenantId }) =>
          secrets.put(tenantId, path.name, Redacted.make(payload.value)).pipe(Effect.mapError(secretsUnavailable))))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* secrets.delete(tenantId, path.name).pipe(Effect.mapError(secretsUnavailable)))) {
            return yield* new NotFound({ message: `no secret "${path.name}"` })
          }
        }))
  }))

const ToolsLive = HttpApiBuilder.group(Api, "tools", (handlers) =>
  Effect.gen(function*() {
    const workers = yield* ToolWorker.client
    const catalog = (tenantId: string) => workers(catalogId(tenantId))
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

const ConnectionsLive = HttpApiBuilder.group(Api, "connections", (handlers) =>
  Effect.gen(function*() {
    const connections = yield* ConnectionStore
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (payload.type === "oauth2") {
            return yield* new InvalidRequest({
              code: "not_supported",
              message: "OAuth2 connections are not available yet; use an api_key connection",
              details: { field: "type" }
            })
          }
          yield* connections.put(tenantId, path.provider, payload)
          return {
            provider: path.provider,
            type: payload.type,
            status: "connected" as const,
            scopes: [],
            expires_at: null
          }
        }))
      .handle("list", () =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          return (yield* connections.list(tenantId)).map(([provider, c]) => ({
            provider,
            type: c.type,
            status: "connected" as const,
            scopes: c.type === "oauth2" ? c.scopes : [],
            expires_at: null
          }))
        }))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* connections.remove(tenantId, path.provider))) {
            return yield* new NotFound({ message: `no connection for ${path.provider}` })
          }
        }))
  }))

const HealthLive = HttpApiBuilder.group(Api, "health", (handlers) =>
  handlers
    .handle("healthz", () => Effect.succeed({ status: "ok" as const }))
    .handle("readyz", () =>
      Effect.gen(function*() {
        const results = yield* Readiness.run
        const checks = Object.fromEntries(results)
        if (results.every(([, r]) => r === "ok")) return { status: "ok" as const, checks }
        return yield* new Unavailable({ message: "not ready", details: { checks } })
      })))

const fieldOf = (path: ReadonlyArray<PropertyKey>) => path.map(String).join(".")

/**
 * Turns what the framework raises before a handler runs (undecodable bodies, bad path params)
 * into the API's own errors, so every answer has the same envelope.
 */
const ErrorEnvelope = HttpApiBuilder.middleware((app) =>
  Effect.catchAllCause(app, (cause) => {
    // A body that cannot be read arrives as a defect (the framework reads it with orDie).
    const e: unknown = Option.getOrUndefined(Option.orElse(Cause.failureOption(cause), () => Cause.dieOption(cause)))
    if (e instanceof HttpApiDecodeError) {
      const issues = e.issues.map((i) => ({ field: fieldOf(i.path), message: i.message }))
      // For a union (text OR plan) the deepest issue is the one that says what is wrong.
      const first = issues.reduce<typeof issues[number] | undefined>(
        (deepest, i) => (!deepest || i.field.split(".").length > deepest.field.split(".").length ? i : deepest),
        undefined
      )
      return Effect.fail(
        new InvalidRequest({
          message: first ? `${first.field || "body"}: ${first.message}` : e.message,
          details: { field: first?.field ?? "", issues }
        })
      ) as any
    }
    if (HttpServerError.isServerError(e) && e._tag === "RequestError") {
      return Effect.fail(
        new InvalidRequest({ message: "the request body is not valid JSON", details: { field: "body" } })
      ) as any
    }
    return Effect.failCause(cause)
  })
)

const wwwAuthenticate = `Bearer realm="altan", error="invalid_token"`

/** Last touches on every response: the `WWW-Authenticate` challenge on 401, JSON bodies on bare 404s. */
const finishResponse = (
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse
) => {
  if (response.status === 401) {
    return Effect.succeed(HttpServerResponse.setHeader(response, "www-authenticate", wwwAuthenticate))
  }
  // the rest of an oversized body is not worth reading: close the connection after answering
  if (response.status === 413) return Effect.succeed(HttpServerResponse.setHeader(response, "connection", "close"))
  if (response.status === 404 && response.body._tag === "Empty") {
    return Effect.succeed(HttpServerResponse.unsafeJson(
      { error: { code: "not_found", message: `no route for ${request.method} ${request.url.split("?")[0]}` } },
      { status: 404 }
    ))
  }
  return Effect.succeed(response)
}

const tooLarge = (maxBodyBytes: number) =>
  HttpServerResponse.unsafeJson(
    { error: { code: "payload_too_large", message: `the request body is over ${maxBodyBytes} bytes` } },
    { status: 413 }
  )

/** Reads a body of unknown length up to `limit` bytes; `undefined` once it goes over (the rest is left unread). */
const readLimited = (source: Readable, limit: number) =>
  Effect.async<Buffer | undefined, Error>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    const done = () => {
      source.off("data", onData).off("end", onEnd).off("error", onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        done()
        source.pause()
        resume(Effect.succeed(undefined))
      } else chunks.push(chunk)
    }
    const onEnd = () => {
      done()
      resume(Effect.succeed(Buffer.concat(chunks)))
    }
    const onError = (error: Error) => {
      done()
      resume(Effect.fail(error))
    }
    source.on("data", onData).on("end", onEnd).on("error", onError)
  })

/** The same request with its body already read (so the framework never reads the socket again). */
const withBody = (request: HttpServerRequest.HttpServerRequest, body: Buffer): HttpServerRequest.HttpServerRequest => {
  const text = body.toString("utf8")
  return Object.create(request, {
    text: { get: () => Effect.succeed(text) },
    arrayBuffer: { get: () => Effect.succeed(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)) },
    json: {
      get: () =>
        Effect.try({
          try: () => (text === "" ? null : JSON.parse(text) as unknown),
          catch: (cause) => new HttpServerError.RequestError({ request, reason: "Decode", cause })
        })
    }
  })
}

/**
 * The outermost layer of every request: the body limit. A declared length over it is refused before
 * anything is read; a chunked body is read here, up to the limit, and refused as soon as it passes it.
 */
const edge = (maxBodyBytes: number) => (app: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, any>) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    yield* HttpApp.appendPreResponseHandler(finishResponse)
    const declared = request.headers["content-length"]
    if (declared !== undefined) {
      if (Number(declared) > maxBodyBytes) return tooLarge(maxBodyBytes)
      return yield* app
    }
    if (!HttpMethod.hasBody(request.method) || request.headers["transfer-encoding"] === undefined) return yield* app
    const body = yield* readLimited(NodeHttpServerRequest.toIncomingMessage(request), maxBodyBytes).pipe(
      Effect.mapError((cause) => new HttpServerError.RequestError({ request, reason: "Transport", cause }))
    )
    if (body === undefined) return tooLarge(maxBodyBytes)
    return yield* Effect.provideService(app, HttpServerRequest.HttpServerRequest, withBody(request, body))
  })

/** The public API, its docs and its OpenAPI document, served on the configured `HttpServer`. */
export const HttpLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* IntegratorConfig
  return HttpApiBuilder.serve((app) => HttpMiddleware.xForwardedHeaders(edge(config.maxBodyBytes)(app)) as any).pipe(
    Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    Layer.provide(ErrorEnvelope),
    Layer.provide(HttpApiBuilder.api(Api)),
    Layer.provide([
      TasksLive,
      SessionsLive,
      LlmsLive,
      SettingsLive,
      SecretsLive,
      ToolsLive,
      ConnectionsLive,
      HealthLive
    ]),
    Layer.provide(AuthenticationLive)
  )
}))
