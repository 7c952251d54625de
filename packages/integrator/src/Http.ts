import { AuditLog } from "@altan/audit/AuditLog"
import { Api } from "@altan/domain/Api"
import { Connection } from "@altan/domain/Connection"
import type { ConnectionConfig, ConnectionInfo } from "@altan/domain/ConnectionConfig"
import { Conflict, Forbidden, InvalidRequest, NotFound, TooManyRequests, Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { CurrentPrincipal } from "@altan/domain/Principal"
import * as Readiness from "@altan/domain/Readiness"
import { isTerminal, Task } from "@altan/domain/Task"
import { catalogId, type ToolNotFound, ToolWorker } from "@altan/domain/ToolWorker"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import { HttpApiDecodeError } from "@effect/platform/HttpApiError"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMethod from "@effect/platform/HttpMethod"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerRespondable from "@effect/platform/HttpServerRespondable"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import type { Readable } from "node:stream"
import { retryAfterSeconds } from "./Admission.js"
import { AuthenticationLive, RequestPrincipal } from "./Auth.js"
import { ConnectionStore } from "./ConnectionStore.js"
import { IntegratorConfig } from "./IntegratorConfig.js"
import { authorizeUrl, OAuthStore, randomToken, scopesFor, stateTtlMs } from "./OAuth.js"
import { RpcLive } from "./Rpc.js"
import { SecretStore, type SecretStoreError } from "./SecretStore.js"
import { orUnavailable, Tasks } from "./Tasks.js"
import { TenantConfig } from "./TenantConfig.js"

const encodeTask = HttpServerResponse.schemaJson(Task)

/** Configuration routes are for the tenant's admins. */
const requireAdmin = Effect.flatMap(CurrentPrincipal, (principal) =>
  principal.role === "admin"
    ? Effect.succeed(principal)
    : Effect.fail(new Forbidden({ message: "this route needs the admin role" })))

const TasksLive = HttpApiBuilder.group(Api, "tasks", (handlers) =>
  Effect.gen(function*() {
    const tasks = yield* Tasks
    return handlers
      .handle("create", ({ payload }) =>
        Effect.gen(function*() {
          const task = yield* tasks.submit(yield* CurrentPrincipal, payload)
          if (isTerminal(task.status)) return task
          return yield* Effect.orDie(encodeTask(task, { status: 202 }))
        }))
      .handle("get", ({ path }) => Effect.flatMap(CurrentPrincipal, (principal) => tasks.get(principal, path.task_id)))
      .handle("events", ({ headers, path }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          const events = (yield* tasks.events(principal, path.task_id, headers["last-event-id"])).pipe(
            Stream.map((e) => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`),
            // comments keep idle connections open through proxies; they stop with the events
            Stream.merge(Stream.tick("15 seconds").pipe(Stream.map(() => ": keep-alive\n\n")), {
              haltStrategy: "left"
            }),
            Stream.catchAll((e) =>
              Stream.make(`event: error\ndata: ${JSON.stringify({ error: { code: e.code, message: e.message } })}\n\n`)
            ),
            Stream.encodeText
          )
          return HttpServerResponse.stream(events, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })
        }))
      .handle("cancel", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) => tasks.cancel(principal, path.task_id)))
  }))

const SessionsLive = HttpApiBuilder.group(Api, "sessions", (handlers) =>
  Effect.gen(function*() {
    const tasks = yield* Tasks
    return handlers
      .handle("get", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) => tasks.getSession(principal, path.session_id)))
      .handle("reset", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          tasks.resetSession(principal, path.session_id)))
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

/** Where the provider sends the user back: `OAUTH_REDIRECT_URL`, else this edge's own callback URL. */
const redirectUri = Effect.gen(function*() {
  const config = yield* IntegratorConfig
  if (Option.isSome(config.oauthRedirectUrl)) return config.oauthRedirectUrl.value
  const request = yield* HttpServerRequest.HttpServerRequest
  const host = request.headers["host"] ?? "localhost"
  const proto = request.headers["x-forwarded-proto"] === "https" ? "https" : "http"
  return `${proto}://${host}/v1/oauth/callback`
})

const ConnectionsLive = HttpApiBuilder.group(Api, "connections", (handlers) =>
  Effect.gen(function*() {
    const connections = yield* ConnectionStore
    const oauth = yield* OAuthStore
    const entities = yield* Connection.client
    const infoOf = (tenantId: TenantId, provider: string, c: ConnectionConfig) =>
      c.type === "api_key"
        ? Effect.succeed<ConnectionInfo>({ provider, type: c.type, status: "connected", scopes: [], expires_at: null })
        : Effect.map(oauth.getStatus(tenantId, provider), (status) => ({
          provider,
          type: c.type,
          ...Option.getOrElse(status, () => ({ status: "pending" as const, scopes: [], expires_at: null }))
        }))
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          // another OAuth app (or no OAuth at all): the old grant is revoked and its tokens forgotten first
          const previous = yield* connections.get(tenantId, path.provider)
          if (
            Option.isSome(previous) && previous.value.type === "oauth2" &&
            (payload.type !== "oauth2" || payload.client_id !== previous.value.client_id ||
              payload.token_url !== previous.value.token_url || payload.authorize_url !== previous.value.authorize_url)
          ) {
            yield* orUnavailable(entities(`${tenantId}/${path.provider}`).Disconnect())
          }
          yield* connections.put(tenantId, path.provider, payload)
          return yield* infoOf(tenantId, path.provider, payload)
        }))
      .handle("authorize", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          const connection = yield* connections.get(tenantId, path.provider)
          if (Option.isNone(connection)) {
            return yield* new NotFound({ message: `no connection for ${path.provider}` })
          }
          if (connection.value.type !== "oauth2") {
            return yield* new Conflict({
              message: `the ${path.provider} connection is an ${connection.value.type} connection; ` +
                "only oauth2 connections are authorized"
            })
          }
          const state = randomToken()
          const codeVerifier = randomToken()
          const redirect = yield* redirectUri
          const expiresAt = Date.now() + stateTtlMs
          yield* oauth.putPending(state, {
            tenant_id: tenantId,
            provider: path.provider,
            code_verifier: codeVerifier,
            redirect_uri: redirect,
            expires_at: expiresAt
          })
          return {
            authorize_url: authorizeUrl(connection.value, scopesFor(path.provider, connection.value), {
              state,
              redirectUri: redirect,
              codeVerifier
            }),
            expires_at: new Date(expiresAt).toISOString()
          }
        }))
      .handle("list", () =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          return yield* Effect.forEach(
            yield* connections.list(tenantId),
            ([provider, c]) => infoOf(tenantId, provider, c)
          )
        }))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          // the connection's actor revokes and forgets its tokens, so no call keeps using them
          const removed = yield* orUnavailable(entities(`${tenantId}/${path.provider}`).Disconnect())
          if (!removed) return yield* new NotFound({ message: `no connection for ${path.provider}` })
        }))
  }))

const OAuthLive = HttpApiBuilder.group(Api, "oauth", (handlers) =>
  Effect.gen(function*() {
    const oauth = yield* OAuthStore
    const entities = yield* Connection.client
    return handlers.handle("callback", ({ urlParams }) =>
      Effect.gen(function*() {
        // taken whatever happens next: a state is good for one callback
        const pending = yield* oauth.takePending(urlParams.state)
        if (Option.isNone(pending)) {
          return yield* new InvalidRequest({
            code: "invalid_state",
            message:
              "unknown, already used or expired state: start again with POST /v1/connections/{provider}/authorize",
            details: { field: "state" }
          })
        }
        const { code_verifier, provider, redirect_uri, tenant_id } = pending.value
        if (urlParams.error !== undefined || urlParams.code === undefined) {
          return yield* new InvalidRequest({
            code: "authorization_denied",
            message: `the ${provider} authorization was not granted: ${urlParams.error ?? "no code"}${
              urlParams.error_description ? ` (${urlParams.error_description})` : ""
            }`,
            details: { provider }
          })
        }
        return yield* orUnavailable(
          entities(`${tenant_id}/${provider}`).CompleteAuthorization({
            code: urlParams.code,
            code_verifier,
            redirect_uri
          })
        ).pipe(
          Effect.catchTag(
            "NotFound",
            () =>
              Effect.fail(new NotFound({ message: `the ${provider} connection was deleted during its authorization` }))
          )
        )
      }).pipe(Effect.withSpan("Http.oauthCallback", { captureStackTrace: false })))
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

/** `Retry-After` on the answer to a 429 or 503, from the error's `details.retry_after_ms` (default 1 s). */
const withRetryAfter = (e: TooManyRequests | Unavailable) => {
  const seconds = e instanceof TooManyRequests
    ? retryAfterSeconds(e)
    : Math.max(1, Math.ceil(Number(e.details?.["retry_after_ms"] ?? 1000) / 1000))
  return HttpApp.appendPreResponseHandler((_request, response) =>
    Effect.succeed(HttpServerResponse.setHeader(response, "retry-after", String(seconds)))
  )
}

/** A response (or something that renders as one) raised as a defect: the framework answers it as it is. */
const isResponse = (u: unknown) => HttpServerResponse.isServerResponse(u) || HttpServerRespondable.isRespondable(u)

const storageTags = new Set(["RedisError", "SecretStoreError", "SqlError"])
const outageCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH"])
const outageMessage = /max retries per request|connection is closed|stream isn't writeable/i

/**
 * Whether a defect is a storage backend going away rather than a bug: the stores' own errors (they have no
 * error channel, so Redis failures arrive as defects), ioredis' give-ups and refused or dropped connections.
 */
const isStorageOutage = (defect: unknown): boolean => {
  for (let u = defect, hops = 0; typeof u === "object" && u !== null && hops < 5; u = (u as any).cause, hops++) {
    const { _tag, code, message, name } = u as Record<string, unknown>
    if (typeof _tag === "string" && storageTags.has(_tag)) return true
    if (typeof code === "string" && outageCodes.has(code)) return true
    if (name === "MaxRetriesPerRequestError") return true
    if (typeof message === "string" && outageMessage.test(message)) return true
  }
  return false
}

/**
 * A defect (a bug, or a store that failed) answered with the envelope instead of the framework's empty 500:
 * 503 `unavailable` with `Retry-After` when storage is away, else 500 `internal_error`. The client gets a
 * generic message and the trace id; the log gets the cause.
 */
const unexpected = (cause: Cause.Cause<unknown>, defect: unknown) =>
  Effect.gen(function*() {
    const outage = isStorageOutage(defect)
    yield* Effect.logError(
      outage ? "storage unavailable while answering a request" : "defect answering a request",
      cause
    )
    const traceId = Option.map(yield* Effect.option(Effect.currentSpan), (span) => span.traceId)
    const details = Option.match(traceId, { onNone: () => undefined, onSome: (trace_id) => ({ trace_id }) })
    if (outage) {
      const error = new Unavailable({ message: "storage is unavailable; retry later", ...(details ? { details } : {}) })
      return yield* Effect.zipRight(withRetryAfter(error), Effect.fail(error))
    }
    return HttpServerResponse.unsafeJson(
      {
        error: { code: "internal_error", message: "the request failed unexpectedly", ...(details ? { details } : {}) }
      },
      { status: 500 }
    )
  })

/**
 * Turns what the framework raises before a handler runs (undecodable bodies, bad path params), and any
 * defect of a handler, into the API's own errors, so every answer has the same envelope.
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
    // every 429 and 503 says when to come back, from the error's own details
    if (e instanceof TooManyRequests || e instanceof Unavailable) {
      return Effect.zipRight(withRetryAfter(e), Effect.failCause(cause))
    }
    if (Option.isNone(Cause.failureOption(cause)) && !Cause.isInterruptedOnly(cause) && !isResponse(e)) {
      return unexpected(cause, e) as any
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

const tooDeep = (maxJsonDepth: number) =>
  HttpServerResponse.unsafeJson(
    {
      error: {
        code: "invalid_json",
        message: `the request body is JSON nesting deeper than ${maxJsonDepth} levels`,
        details: { field: "body", max_depth: maxJsonDepth }
      }
    },
    { status: 400 }
  )

/**
 * Whether JSON (or ndjson) text nests objects and arrays deeper than `max`, in one pass over its bytes and
 * without parsing it; brackets inside strings do not count. UTF-8 continuation bytes are never ASCII, so
 * bytes can be read as characters.
 */
const nestsDeeperThan = (bytes: Uint8Array, max: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if (inString) {
      if (b === 0x5c) i++ // the escaped character, whatever it is
      else if (b === 0x22) inString = false
    } else if (b === 0x22) inString = true
    else if (b === 0x7b || b === 0x5b) {
      if (++depth > max) return true
    } else if ((b === 0x7d || b === 0x5d) && depth > 0) depth--
  }
  return false
}

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

type App = Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, any>

/**
 * The outermost layer of every request: the body limits. A declared length over the size limit is refused
 * before anything is read; any other body is read here, up to the limit (a chunked one is refused as soon as
 * it passes it), and refused when its JSON nests deeper than `maxJsonDepth`, before anything parses it.
 */
const edge = ({ maxBodyBytes, maxJsonDepth }: IntegratorConfig["Type"]) => (app: App) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    yield* HttpApp.appendPreResponseHandler(finishResponse)
    const holder: RequestPrincipal["Type"] = { current: undefined }
    yield* HttpApp.appendPreResponseHandler(auditResponse(yield* AuditLog, holder))
    // a fresh holder per request (the app itself is shared by every request)
    const served = Effect.provideService(app, RequestPrincipal, holder)
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > maxBodyBytes) return tooLarge(maxBodyBytes)
    const hasBody = declared === undefined ? request.headers["transfer-encoding"] !== undefined : Number(declared) > 0
    if (!HttpMethod.hasBody(request.method) || !hasBody) return yield* served
    const body = yield* readLimited(NodeHttpServerRequest.toIncomingMessage(request), maxBodyBytes).pipe(
      Effect.mapError((cause) => new HttpServerError.RequestError({ request, reason: "Transport", cause }))
    )
    if (body === undefined) return tooLarge(maxBodyBytes)
    if (nestsDeeperThan(body, maxJsonDepth)) return tooDeep(maxJsonDepth)
    return yield* Effect.provideService(served, HttpServerRequest.HttpServerRequest, withBody(request, body))
  })

const configKinds: Record<string, string> = {
  llms: "llm",
  settings: "settings",
  secrets: "secret",
  tools: "tool",
  connections: "connection"
}

/**
 * Audits what the answer says about the request: a configuration write (never its body, so never a
 * secret value) with its outcome, and any refusal for the caller's role.
 */
const auditResponse = (audit: AuditLog["Type"], holder: RequestPrincipal["Type"]) =>
(
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse
) =>
  Effect.gen(function*() {
    const principal = Option.fromNullable(holder.current)
    if (Option.isNone(principal)) return response
    const path = request.url.split("?")[0]!
    const match = /^\/v1\/(llms|settings|secrets|tools|connections)(?:\/([^/]+))?(?:\/(authorize))?$/.exec(path)
    const write = request.method === "PUT" || request.method === "DELETE" || request.method === "POST"
    if (response.status !== 403 && !(match && write)) return response
    const target = match
      ? `${configKinds[match[1]!]}${match[2] ? `:${decodeURIComponent(match[2])}` : ""}`
      : `${request.method} ${path}`
    yield* audit.record({
      tenant_id: principal.value.tenantId,
      user: principal.value.userId,
      action: response.status === 403 ? "authz.failure" : "config.change",
      target,
      outcome: response.status === 403 ? "denied" : response.status < 400 ? "ok" : "failed",
      details: { method: request.method, status: response.status, ...(match?.[3] ? { operation: match[3] } : {}) }
    })
    return response
  })

/** The public API, its docs and its OpenAPI document, served on the configured `HttpServer`. */
export const HttpLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* IntegratorConfig
  return HttpApiBuilder.serve((app) => HttpMiddleware.xForwardedHeaders(edge(config)(app)) as any).pipe(
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
      OAuthLive,
      HealthLive,
      RpcLive
    ]),
    Layer.provide(AuthenticationLive),
    Layer.provide(Tasks.Default),
    // the callback's query holds a live authorization code and state: no span records its URL; probes are noise
    HttpMiddleware.withTracerDisabledWhen((request) =>
      request.url.startsWith("/v1/oauth/callback") || request.url === "/healthz" || request.url === "/readyz"
    )
  )
}))
