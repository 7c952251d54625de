import { Api } from "@altan/domain/Api"
import { InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import type { McpServerConfig } from "@altan/domain/McpServers"
import { catalogId, type Credential, ToolWorker } from "@altan/domain/ToolWorker"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { ConnectionStore } from "./ConnectionStore.js"
import { orUnavailable } from "./internal/clusterCall.js"
import { requireAdmin } from "./internal/requireAdmin.js"
import { SecretStore } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

/**
 * `/v1/mcp/servers`: the tenant's remote MCP servers. Importing lists the server's tools from the tool service (which
 * reaches it through the egress guard), with the credential of the server's connection, read here: the tool service
 * never reads secrets. Admin only.
 */
export const McpServersLive = HttpApiBuilder.group(Api, "mcp", (handlers) =>
  Effect.gen(function*() {
    const workers = yield* ToolWorker.client
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

    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.flatMap(requireAdmin, ({ tenantId }) =>
          importServer(tenantId, path.server_id, payload)))
      .handle("list", () =>
        Effect.flatMap(requireAdmin, ({ tenantId }) =>
          orUnavailable(catalog(tenantId).ListMcpServers())))
      .handle("get", ({ path }) =>
        Effect.flatMap(
          requireAdmin,
          ({ tenantId }) =>
            orUnavailable(catalog(tenantId).GetMcpServer({ server_id: path.server_id }))
        ))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* orUnavailable(catalog(tenantId).DeleteMcpServer({ server_id: path.server_id })))) {
            return yield* new NotFound({ message: `no MCP server ${path.server_id}` })
          }
        }))
      .handle("refresh", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          // the server as the admin configured it (its `tools` filter included), imported again
          const { imported: _, protocol_version: __, refreshed_at: ___, server_id, ...configured } =
            yield* orUnavailable(
              catalog(tenantId).GetMcpServer({ server_id: path.server_id })
            )
          return yield* importServer(tenantId, server_id, configured)
        }))
  }))
