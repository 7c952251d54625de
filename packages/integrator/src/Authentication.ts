import { AuditLog } from "@altan/audit/AuditLog"
import { Authentication } from "@altan/domain/Api"
import type { Unauthorized } from "@altan/domain/Errors"
import { RpcAuthentication } from "@altan/domain/TaskRpc"
import type { Headers } from "@effect/platform/Headers"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { RequestAudit } from "./internal/responseAudit.js"
import { TokenVerifier } from "./TokenVerifier.js"

/** The RFC 6750 challenge of a 401; the description is the error's message, which never quotes the token. */
export const challenge = (error: Unauthorized): string =>
  `Bearer realm="altan", error="invalid_token", error_description="${error.message.replace(/["\\]/g, "'")}"`

/** The token is not trusted, so neither is its tenant: the record is under "-". */
const recordFailure = (audit: AuditLog["Type"], target: string, error: Unauthorized) =>
  audit.record({
    tenant_id: "-",
    action: "auth.failure",
    target,
    outcome: "denied",
    details: { reason: error.message }
  })

/**
 * The `Authentication` middleware of the public API: bearer token -> `CurrentPrincipal`. A refusal is a 401
 * with the error envelope and a `WWW-Authenticate: Bearer error="invalid_token"` challenge naming the problem.
 */
export const layer: Layer.Layer<Authentication, never, TokenVerifier | AuditLog> = Layer.effect(
  Authentication,
  Effect.gen(function*() {
    const verifier = yield* TokenVerifier
    const audit = yield* AuditLog
    return {
      bearer: (token) =>
        verifier.verify(Redacted.value(token).trim()).pipe(
          // the caller and the route it reached, for the audit of the answer
          Effect.tap((principal) =>
            Effect.flatMap(Effect.serviceOption(RequestAudit), (served) =>
              Option.isNone(served) ? Effect.void : Effect.map(HttpRouter.RouteContext, (route) => {
                served.value.principal = principal
                served.value.route = route
              }))
          ),
          Effect.tapError((error) =>
            Effect.zipRight(
              Effect.flatMap(
                HttpServerRequest.HttpServerRequest,
                (request) =>
                  recordFailure(audit, `${request.method} ${request.url.split("?")[0]}`, error)
              ),
              HttpApp.appendPreResponseHandler((_request, response) =>
                Effect.succeed(
                  response.status === 401
                    ? HttpServerResponse.setHeader(response, "www-authenticate", challenge(error))
                    : response
                )
              )
            )
          )
        )
    }
  })
)

/** The token of an `authorization: Bearer <token>` header; empty when there is none. */
const bearerToken = (headers: Headers): string => {
  const header = headers.authorization ?? ""
  return /^bearer /i.test(header) ? header.slice("bearer ".length).trim() : ""
}

/** `RpcAuthentication`: the request's bearer token, verified like the HTTP API's, becomes `CurrentPrincipal`. */
export const layerRpc: Layer.Layer<RpcAuthentication, never, TokenVerifier | AuditLog> = Layer.effect(
  RpcAuthentication,
  Effect.gen(function*() {
    const verifier = yield* TokenVerifier
    const audit = yield* AuditLog
    return ({ headers, rpc }) =>
      verifier.verify(bearerToken(headers)).pipe(
        Effect.tapError((error) => recordFailure(audit, `rpc ${rpc._tag}`, error))
      )
  })
)
