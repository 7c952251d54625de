import { AuditLog } from "@altan/audit/AuditLog"
import { Api } from "@altan/domain/Api"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Authentication from "./Authentication.js"
import { LlmsLive, SecretsLive, SettingsLive, UsageLive } from "./HttpConfig.js"
import { ConnectionsLive, OAuthLive } from "./HttpConnections.js"
import { ConsoleLive } from "./HttpConsole.js"
import { HealthLive } from "./HttpHealth.js"
import { McpServersLive } from "./HttpMcpServers.js"
import { ApprovalsLive, SessionsLive, TasksLive } from "./HttpTasks.js"
import { ToolsLive } from "./HttpTools.js"
import { IntegratorConfig } from "./IntegratorConfig.js"
import { withBodyLimits } from "./internal/bodyLimit.js"
import { errorEnvelope, finishResponse } from "./internal/errorEnvelope.js"
import { auditResponse, RequestAudit } from "./internal/responseAudit.js"
import { McpLive } from "./McpServer.js"
import { RpcLive } from "./Rpc.js"
import { Tasks } from "./Tasks.js"

/**
 * The outermost layer of every request: the last touches on the answer, its audit, and the body limits
 * (see `withBodyLimits`).
 */
const edge = (config: IntegratorConfig["Type"]) => <E, R>(app: HttpApp.Default<E, R>) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    yield* HttpApp.appendPreResponseHandler(finishResponse)
    const served: RequestAudit["Type"] = { principal: undefined, route: undefined }
    yield* HttpApp.appendPreResponseHandler(auditResponse(yield* AuditLog, served))
    // a fresh one per request (the app itself is shared by every request)
    return yield* withBodyLimits(config, request, Effect.provideService(app, RequestAudit, served))
  })

/** The public API, its docs, its OpenAPI document and the console, served on the configured `HttpServer`. */
export const HttpEdgeLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* IntegratorConfig
  // `HttpApiBuilder.serve`, with a middleware that may fail (a body that breaks off mid-read)
  return HttpApiBuilder.httpApp.pipe(
    Effect.map((app) => HttpServer.serve(app, (app) => HttpMiddleware.xForwardedHeaders(edge(config)(app)))),
    Layer.unwrapEffect,
    Layer.provide([HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer]),
    Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    Layer.provide(HttpApiBuilder.middleware(Api, errorEnvelope)),
    Layer.provide(HttpApiBuilder.api(Api)),
    Layer.provide([
      TasksLive,
      ApprovalsLive,
      SessionsLive,
      LlmsLive,
      SettingsLive,
      UsageLive,
      SecretsLive,
      ToolsLive,
      ConnectionsLive,
      McpServersLive,
      OAuthLive,
      HealthLive,
      RpcLive,
      McpLive,
      ConsoleLive
    ]),
    Layer.provide(Authentication.layer),
    Layer.provide(Tasks.Default),
    // the callback's query holds a live authorization code and state: no span records its URL; probes are noise
    HttpMiddleware.withTracerDisabledWhen((request) =>
      request.url.startsWith("/v1/oauth/callback") || request.url === "/healthz" || request.url === "/readyz"
    )
  )
}))
