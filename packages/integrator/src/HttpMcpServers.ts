import { Api } from "@altan/domain/Api"
import { Connection, connectionId } from "@altan/domain/Connection"
import type { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import { InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import {
  canonicalResource,
  mcpClientSecretName,
  mcpConfigOf,
  mcpProviderOf,
  type McpServerConfig,
  tokenIsFor
} from "@altan/domain/McpServers"
import { catalogId, type Credential, ToolWorker } from "@altan/domain/ToolWorker"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { ConnectionStore } from "./ConnectionStore.js"
import { orUnavailable } from "./internal/clusterCall.js"
import { oauthRedirectUri } from "./internal/redirectUri.js"
import { requireAdmin } from "./internal/requireAdmin.js"
import { setUpDeadline } from "./McpAuthorization.js"
import { beginAuthorization, OAuthStore, stateTtlMs } from "./OAuth.js"
import { revocationTimeout } from "./OAuthSession.js"
import { SecretStore } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

/**
 * How much longer than a plain call the edge waits for an OAuth set-up: the set-up's own deadline and the revocation
 * of an earlier grant, so the actor has always finished (or changed nothing) by the time the edge answers.
 */
const setUpWait = Duration.sum(setUpDeadline, Duration.decode(revocationTimeout))

/** Where the authorization server sends the user back (see `oauthRedirectUri`); inside a request there always is one. */
const redirectUri = Effect.map(oauthRedirectUri, Option.getOrElse(() => "http://localhost/v1/oauth/callback"))

/**
 * `/v1/mcp/servers`: the tenant's remote MCP servers. Importing lists the server's tools from the tool service (which
 * reaches it through the egress guard), with the credential of the server's connection, read here: the tool service
 * never reads secrets. An OAuth-protected server (`auth: oauth2`) is set up and imported by its connection's actor,
 * which owns its tokens. Admin only.
 */
export const McpServersLive = HttpApiBuilder.group(Api, "mcp", (handlers) =>
  Effect.gen(function*() {
    const workers = yield* ToolWorker.client
    const entities = yield* Connection.client
    const oauth = yield* OAuthStore
    const config = yield* TenantConfig
    const connections = yield* ConnectionStore
    const secrets = yield* SecretStore
    const catalog = (tenantId: TenantId) => workers(catalogId(tenantId))

    /** The credential of the server's connection: an API key connection whose secret is stored. */
    const credentialOf = (tenantId: TenantId, server: McpServerConfig) =>
      Effect.gen(function*() {
        if (server.connection === undefined) return undefined
        const invalid = (message: string) => new InvalidRequest({ message, details: { field: "connection" } })
        const found = yield* connections.get(tenantId, server.connection)
        if (Option.isNone(found)) {
          return yield* invalid(
            `no connection "${server.connection}": create it first with PUT /v1/connections/${server.connection}`
          )
        }
        if (found.value.type !== "api_key") {
          return yield* invalid(
            `the "${server.connection}" connection is oauth2; MCP servers take an api_key connection (or none) for now`
          )
        }
        const { header, prefix, secret } = found.value
        const value = yield* secrets.get(tenantId, secret).pipe(
          Effect.mapError((e) => new Unavailable({ message: e.message }))
        )
        if (Option.isNone(value)) {
          return yield* invalid(`the secret "${secret}" of the "${server.connection}" connection is not stored`)
        }
        return { header, value: Redacted.make(prefix + Redacted.value(value.value)) } satisfies Credential
      })

    const importServer = (tenantId: TenantId, serverId: string, server: McpServerConfig) =>
      Effect.gen(function*() {
        if (server.auth === "oauth2") return yield* importProtected(tenantId, serverId, server, "put")
        const credential = yield* credentialOf(tenantId, server)
        const settings = yield* config.getSettings(tenantId)
        return yield* orUnavailable(
          catalog(tenantId).ImportMcpServer({
            server_id: serverId,
            config: server,
            ...(credential ? { credential } : {}),
            egress_allowlist: settings.egress_allowlist
          })
        )
      })

    /**
     * An OAuth-protected server (`auth: oauth2`): its oauth2 connection set up when there is none that fits (discovery,
     * registration), then its tools imported through that connection; without a grant yet, the server is answered
     * `needs_authorization` with where the tenant's user consents (the callback imports its tools). On `put` a server
     * waiting for its grant is stored with no tools; on `refresh` what was imported stays (its calls wait for the grant).
     * A connection whose tokens are for another resource than the server's URL is never used for it: the server's own
     * (`mcp-<server_id>`) is set up again, one the admin named is refused.
     */
    const importProtected = (tenantId: TenantId, serverId: string, server: McpServerConfig, on: "put" | "refresh") =>
      Effect.gen(function*() {
        const provider = mcpProviderOf({ server_id: serverId, connection: server.connection })
        const entity = entities(connectionId(tenantId, provider))
        const existing = yield* connections.get(tenantId, provider)
        if (Option.isSome(existing) && existing.value.type !== "oauth2") {
          return yield* new InvalidRequest({
            message: `the "${provider}" connection is an ${existing.value.type} connection; auth oauth2 needs an ` +
              `oauth2 one (or leave connection out: mcp-${serverId} is made)`,
            details: { field: "connection" }
          })
        }
        if (yield* needsSetUp(tenantId, serverId, server, existing)) {
          // the connection's actor discovers, registers and keeps the client (revoking an earlier grant first)
          yield* orUnavailable(
            entity.SetUpMcpAuthorization({ server_id: serverId, config: server, redirect_uri: yield* redirectUri }),
            setUpWait
          )
        }
        return yield* orUnavailable(entity.ImportMcpServer({ server_id: serverId, config: server })).pipe(
          Effect.catchTag("ConnectionRequired", () => needsAuthorization(tenantId, serverId, server, provider, on))
        )
      })

    /**
     * Whether a server's connection must be set up (again): there is none, its tokens are for another resource (RFC
     * 8707) than the server's URL, or the server or its client changed. A connection the admin named is used as it is
     * when its resource is the server's URL, and refused otherwise (its tokens are another server's or API's).
     */
    const needsSetUp = (
      tenantId: TenantId,
      serverId: string,
      server: McpServerConfig,
      existing: Option.Option<ConnectionConfig>
    ) =>
      Effect.gen(function*() {
        if (Option.isNone(existing)) return true
        const provider = mcpProviderOf({ server_id: serverId, connection: server.connection })
        const forServer = existing.value.type === "oauth2" && tokenIsFor(existing.value.resource, server.url)
        if (provider !== mcpProviderOf({ server_id: serverId })) {
          if (forServer) return false
          const resource = existing.value.type === "oauth2" ? existing.value.resource : undefined
          return yield* new InvalidRequest({
            code: "invalid_mcp_server",
            message:
              `the oauth2 connection "${provider}" holds tokens for ${
                resource === undefined ? "no RFC 8707 resource" : canonicalResource(resource)
              }, not for ${canonicalResource(server.url)}: its tokens are never sent to another server; leave ` +
              `connection out (mcp-${serverId} is set up), or name a connection made for this URL`,
            details: { field: "connection" }
          })
        }
        // the server's own connection, made for another URL: set up again (its old grant revoked)
        if (!forServer) return true
        const previous = yield* orUnavailable(catalog(tenantId).GetMcpServer({ server_id: serverId })).pipe(
          Effect.map(Option.some),
          Effect.catchTag("NotFound", () => Effect.succeed(Option.none()))
        )
        return Option.match(previous, {
          onNone: () => true,
          onSome: (p) =>
            p.auth !== "oauth2" || p.url !== server.url || p.client_id !== server.client_id ||
            p.client_secret_secret !== server.client_secret_secret ||
            JSON.stringify(p.scopes) !== JSON.stringify(server.scopes)
        })
      })

    /** The server as it waits for its grant, with a fresh single-use link where the tenant's user consents. */
    const needsAuthorization = (
      tenantId: TenantId,
      serverId: string,
      server: McpServerConfig,
      provider: string,
      on: "put" | "refresh"
    ) =>
      Effect.gen(function*() {
        const settings = yield* config.getSettings(tenantId)
        const stored = on === "put"
          ? yield* orUnavailable(
            catalog(tenantId).ImportMcpServer({
              server_id: serverId,
              config: server,
              egress_allowlist: settings.egress_allowlist,
              pending: true
            })
          )
          : yield* orUnavailable(catalog(tenantId).GetMcpServer({ server_id: serverId }))
        const connection = yield* connections.get(tenantId, provider)
        if (Option.isNone(connection) || connection.value.type !== "oauth2") {
          return yield* new InvalidRequest({
            message: `no oauth2 connection "${provider}" to authorize`,
            details: { field: "connection" }
          })
        }
        const expiresAt = Date.now() + stateTtlMs
        const url = yield* beginAuthorization(
          oauth,
          tenantId,
          provider,
          connection.value,
          yield* redirectUri,
          expiresAt
        )
        return {
          ...stored,
          status: "needs_authorization" as const,
          authorize_url: url,
          authorize_expires_at: new Date(expiresAt).toISOString()
        }
      })

    return handlers
      .handle(
        "put",
        ({ path, payload }) =>
          Effect.flatMap(requireAdmin, ({ tenantId }) => importServer(tenantId, path.server_id, payload))
      )
      .handle(
        "list",
        () => Effect.flatMap(requireAdmin, ({ tenantId }) => orUnavailable(catalog(tenantId).ListMcpServers()))
      )
      .handle("get", ({ path }) =>
        Effect.flatMap(
          requireAdmin,
          ({ tenantId }) => orUnavailable(catalog(tenantId).GetMcpServer({ server_id: path.server_id }))
        ))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          const stored = yield* orUnavailable(catalog(tenantId).GetMcpServer({ server_id: path.server_id })).pipe(
            Effect.map(Option.some),
            Effect.catchTag("NotFound", () => Effect.succeed(Option.none()))
          )
          // the connection made for an OAuth-protected server goes with it: its grant revoked at the authorization
          // server (RFC 7009), its tokens and client secret forgotten
          if (Option.isSome(stored) && stored.value.auth === "oauth2" && stored.value.connection === undefined) {
            yield* orUnavailable(entities(connectionId(tenantId, mcpProviderOf(stored.value))).Disconnect())
            yield* secrets.delete(tenantId, mcpClientSecretName(path.server_id)).pipe(Effect.ignore)
          }
          if (!(yield* orUnavailable(catalog(tenantId).DeleteMcpServer({ server_id: path.server_id })))) {
            return yield* new NotFound({ message: `no MCP server ${path.server_id}` })
          }
        }))
      .handle("refresh", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          // the server as the admin configured it (its `tools` filter included), imported again
          const stored = yield* orUnavailable(catalog(tenantId).GetMcpServer({ server_id: path.server_id }))
          const configured = mcpConfigOf(stored)
          return yield* configured.auth === "oauth2"
            ? importProtected(tenantId, stored.server_id, configured, "refresh")
            : importServer(tenantId, stored.server_id, configured)
        }))
  }))
