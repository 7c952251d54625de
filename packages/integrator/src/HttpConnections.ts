import { Api } from "@altan/domain/Api"
import { Connection } from "@altan/domain/Connection"
import type { ConnectionConfig, ConnectionInfo } from "@altan/domain/ConnectionConfig"
import { Conflict, InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import { entityId, TenantId } from "@altan/domain/Ids"
import { TenantTasks } from "@altan/domain/TenantTasks"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { ConnectionStore } from "./ConnectionStore.js"
import { orUnavailable } from "./internal/clusterCall.js"
import { oauthRedirectUri } from "./internal/redirectUri.js"
import { requireAdmin } from "./internal/requireAdmin.js"
import { notifyConnectionReady } from "./internal/wakeTasks.js"
import { beginAuthorization, OAuthStore, stateTtlMs } from "./OAuth.js"
import { SecretStore } from "./SecretStore.js"

/** Where the provider sends the user back (see `oauthRedirectUri`); inside a request there always is one. */
const redirectUri = Effect.map(oauthRedirectUri, Option.getOrElse(() => "http://localhost/v1/oauth/callback"))

/**
 * `/v1/connections`: the tenant's connections to providers, and the start of an OAuth authorization. Admin only.
 * Whatever revokes a grant goes through the provider's `Connection` entity, which owns its tokens.
 */
export const ConnectionsLive = HttpApiBuilder.group(Api, "connections", (handlers) =>
  Effect.gen(function*() {
    const connections = yield* ConnectionStore
    const oauth = yield* OAuthStore
    const secrets = yield* SecretStore
    const entities = yield* Connection.client
    const tenantTasks = yield* TenantTasks.client
    const infoOf = (tenantId: TenantId, provider: string, c: ConnectionConfig) =>
      Effect.gen(function*() {
        // whether the secret it names is stored (its value is not read out of the store's answer)
        const secret = c.type === "api_key" ? c.secret : c.client_secret_secret
        // a public OAuth client names none
        const stored = secret === undefined || (yield* Effect.map(secrets.get(tenantId, secret), Option.isSome).pipe(
          Effect.mapError((e) => new Unavailable({ message: e.message }))
        ))
        if (!stored) {
          return { provider, type: c.type, status: "missing_secret" as const, scopes: [], expires_at: null }
        }
        if (c.type === "api_key") {
          return { provider, type: c.type, status: "connected" as const, scopes: [], expires_at: null }
        }
        const status = yield* oauth.getStatus(tenantId, provider)
        return {
          provider,
          type: c.type,
          ...Option.getOrElse(status, () => ({ status: "pending" as const, scopes: [], expires_at: null }))
        } satisfies ConnectionInfo
      })
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
            yield* orUnavailable(entities(entityId(tenantId, path.provider)).Disconnect())
          }
          yield* connections.put(tenantId, path.provider, payload)
          const info = yield* infoOf(tenantId, path.provider, payload)
          // an API key that is stored: the tasks waiting for this connection go on
          if (info.status === "connected") yield* notifyConnectionReady(tenantTasks, tenantId, path.provider)
          return info
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
          const expiresAt = Date.now() + stateTtlMs
          return {
            authorize_url: yield* beginAuthorization(
              oauth,
              tenantId,
              path.provider,
              connection.value,
              yield* redirectUri,
              expiresAt
            ),
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
          const removed = yield* orUnavailable(entities(entityId(tenantId, path.provider)).Disconnect())
          if (!removed) return yield* new NotFound({ message: `no connection for ${path.provider}` })
        }))
  }))

/**
 * `/v1/oauth/callback`: where the provider sends the tenant's user back after consent. The single-use state is
 * the only proof; the connection's entity exchanges the code.
 */
export const OAuthLive = HttpApiBuilder.group(Api, "oauth", (handlers) =>
  Effect.gen(function*() {
    const oauth = yield* OAuthStore
    const entities = yield* Connection.client
    return handlers.handle(
      "callback",
      Effect.fn("HttpConnections.oauthCallback", { captureStackTrace: false })(function*({ urlParams }) {
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
        // the pending state was written from the admin's verified principal
        return yield* orUnavailable(
          entities(entityId(TenantId.make(tenant_id), provider)).CompleteAuthorization({
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
      })
    )
  }))
