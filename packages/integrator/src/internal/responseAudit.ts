import type { AuditLog } from "@altan/audit/AuditLog"
import { Api } from "@altan/domain/Api"
import type { Principal } from "@altan/domain/Principal"
import type * as HttpRouter from "@effect/platform/HttpRouter"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"

/**
 * What the audit of a request's answer needs, learned while the request is served: the caller once its token is
 * verified, and the API route that matched. The edge provides an empty one per request and reads it after the answer.
 */
export class RequestAudit extends Context.Tag("@altan/integrator/RequestAudit")<RequestAudit, {
  principal: Principal | undefined
  route: HttpRouter.RouteContext | undefined
}>() {}

/** The configuration groups of the API, by the name their audit records give the resource. */
const configKinds: Record<string, string> = {
  llms: "llm",
  settings: "settings",
  secrets: "secret",
  tools: "tool",
  connections: "connection"
}

/** Endpoints that read or write the resource itself; any other (`authorize`) is named as the record's operation. */
const plainEndpoints = new Set(["put", "get", "list", "delete"])

/** The configuration endpoints of the API by `METHOD path`, as the router matches them. */
const configEndpoints = new Map<string, { readonly kind: string; readonly operation: string | undefined }>()
for (const group of Object.values(Api.groups)) {
  const kind = configKinds[group.identifier]
  if (kind === undefined) continue
  for (const endpoint of Object.values(group.endpoints)) {
    configEndpoints.set(`${endpoint.method} ${endpoint.path}`, {
      kind,
      operation: plainEndpoints.has(endpoint.name) ? undefined : endpoint.name
    })
  }
}

/**
 * The configuration resource a matched route acts on, as audit records name it (`llm:main`, `settings`), and the
 * operation when it is not a plain read or write; `undefined` for any other route.
 */
export const configResource = (
  route: { readonly method: string; readonly path: string },
  params: Readonly<Record<string, string | undefined>>
): { readonly target: string; readonly operation: string | undefined } | undefined => {
  const endpoint = configEndpoints.get(`${route.method} ${route.path}`)
  if (endpoint === undefined) return undefined
  // a configuration route names at most one resource: its one path parameter
  const id = Object.values(params).find((value) => value !== undefined && value !== "")
  return { target: id === undefined ? endpoint.kind : `${endpoint.kind}:${id}`, operation: endpoint.operation }
}

const isWrite = (method: string) => method === "PUT" || method === "DELETE" || method === "POST"

/**
 * Audits what the answer says about the request: a configuration write (never its body, so never a
 * secret value) with its outcome, and any refusal for the caller's role.
 */
export const auditResponse = (audit: AuditLog["Type"], served: RequestAudit["Type"]) =>
(
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse
): Effect.Effect<HttpServerResponse.HttpServerResponse> => {
  const principal = served.principal
  if (principal === undefined) return Effect.succeed(response)
  const resource = served.route && configResource(served.route.route, served.route.params)
  if (response.status !== 403 && !(resource && isWrite(request.method))) return Effect.succeed(response)
  return Effect.as(
    audit.record({
      tenant_id: principal.tenantId,
      user: principal.userId,
      action: response.status === 403 ? "authz.failure" : "config.change",
      target: resource ? resource.target : `${request.method} ${request.url.split("?")[0]}`,
      outcome: response.status === 403 ? "denied" : response.status < 400 ? "ok" : "failed",
      details: {
        method: request.method,
        status: response.status,
        ...(resource?.operation ? { operation: resource.operation } : {})
      }
    }),
    response
  )
}
