import * as Schema from "effect/Schema"
import { ProviderName } from "./ConnectionConfig.js"
import { HttpUrl } from "./LlmConfig.js"
import { SecretName } from "./Secret.js"
import { JsonSchema } from "./ToolDefinition.js"

/**
 * A tenant's remote MCP servers (`/v1/mcp/servers`): each one's tools become the tenant's tools
 * `mcp.<server_id>.<tool name>`, called through the tenant's connection to the server's provider like any tool.
 */
export const McpServerId = Schema.String.pipe(
  Schema.pattern(/^[a-z][a-z0-9_]{0,31}$/, {
    message: () => "server_id must be 1-32 lowercase letters, digits or _, starting with a letter"
  })
)

/** `PUT /v1/mcp/servers/{server_id}`. */
export const McpServerConfig = Schema.Struct({
  /** The server's Streamable HTTP endpoint; its host must be in the tenant's `egress_allowlist`. */
  url: HttpUrl,
  /**
   * The tenant's connection whose credential every request to the server carries (an `api_key` connection: its
   * header; with `auth: oauth2`, an oauth2 connection's bearer token). Unset: none. Calls go through
   * `Connection[tenant/<connection>]` (or `mcp-<server_id>` without one).
   */
  connection: Schema.optional(ProviderName),
  /**
   * `oauth2`: the server is protected per the MCP authorization specification (OAuth 2.1). Its authorization server is
   * discovered (RFC 9728, RFC 8414), the client registered (RFC 7591) unless `client_id` is given, and the tenant's user
   * consents once (PKCE S256, the server's URL as RFC 8707 resource); the tokens are those of the oauth2 connection
   * `connection` (made here when it is not there), else `mcp-<server_id>`. Unset: `connection`'s credential, or none.
   */
  auth: Schema.optional(Schema.Literal("oauth2")),
  /** With `auth: oauth2`: a client registered beforehand at the server's authorization server, instead of registering. */
  client_id: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(512))),
  /** With `client_id`: the tenant secret holding its client secret; unset: a public client. */
  client_secret_secret: Schema.optional(SecretName),
  /** With `auth: oauth2`: the scopes to ask for; unset: those the server's metadata lists (`scopes_supported`). */
  scopes: Schema.optional(
    Schema.Array(Schema.String.pipe(Schema.pattern(/^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/))).pipe(Schema.maxItems(64))
  ),
  /** Only these of the server's tools (by the server's names); unset: all of them. */
  tools: Schema.optional(
    Schema.Array(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128))).pipe(
      Schema.maxItems(256)
    )
  ),
  description: Schema.optional(Schema.String.pipe(Schema.maxLength(1000)))
}).annotations({ identifier: "McpServerConfig", parseOptions: { onExcessProperty: "error" } })
export type McpServerConfig = typeof McpServerConfig.Type

/** One tool of a remote MCP server, as it listed it (`tools/list`), under its tool id here. */
export const McpImportedTool = Schema.Struct({
  tool_id: Schema.String,
  /** The server's name for it, which `tools/call` uses. */
  name: Schema.String,
  title: Schema.optional(Schema.String),
  description: Schema.String,
  input_schema: JsonSchema,
  output_schema: Schema.optional(JsonSchema),
  read_only: Schema.Boolean,
  destructive: Schema.Boolean,
  idempotent: Schema.Boolean
})
export type McpImportedTool = typeof McpImportedTool.Type

/** A remote MCP server as stored, and as `GET /v1/mcp/servers` shows it. */
export const McpServer = Schema.Struct({
  server_id: McpServerId,
  ...McpServerConfig.fields,
  /** The MCP protocol revision the server answered with. */
  protocol_version: Schema.optional(Schema.String),
  /** The server's tools as imported (those `tools` lets through). */
  imported: Schema.Array(McpImportedTool),
  refreshed_at: Schema.String,
  /**
   * `needs_authorization`: an `auth: oauth2` server whose connection has no grant yet (or lost it): nothing is imported
   * until the tenant's user consents at `authorize_url`; the callback imports its tools. Unset: imported.
   */
  status: Schema.optional(Schema.Literal("ready", "needs_authorization")),
  /** Where the tenant's user consents (single-use; answered by `PUT` and refresh while `needs_authorization`). */
  authorize_url: Schema.optional(Schema.String),
  /** When `authorize_url` stops being accepted. */
  authorize_expires_at: Schema.optional(Schema.String)
}).annotations({ identifier: "McpServer" })
export type McpServer = typeof McpServer.Type

/** The provider (and so the `Connection`) a server's calls go through. */
export const mcpProviderOf = (server: { readonly server_id: string; readonly connection?: string | undefined }) =>
  server.connection ?? `mcp-${server.server_id}`

/**
 * An MCP server's URL as an RFC 8707 resource indicator: its canonical form (scheme and host lowercased, default port
 * dropped, no fragment), as tokens for it are asked for and checked.
 */
export const canonicalResource = (url: string): string => {
  const parsed = new URL(url)
  parsed.hash = ""
  return parsed.href
}

/**
 * Whether a token issued for `resource` (an oauth2 connection's RFC 8707 resource) may be sent to the MCP server at
 * `serverUrl`: the resource is the server's URL, or (as RFC 9728 3.3 lets a server's protected resource metadata say)
 * a parent of it on the same origin, at a path segment boundary. No resource: never, the token is for something else.
 */
export const tokenIsFor = (resource: string | undefined, serverUrl: string): boolean => {
  if (resource === undefined) return false
  let configured: URL, requested: URL
  try {
    configured = new URL(canonicalResource(resource))
    requested = new URL(canonicalResource(serverUrl))
  } catch {
    return false
  }
  if (configured.origin !== requested.origin) return false
  if (configured.href === requested.href) return true
  // a parent path names no query: the server's own URL with one is matched exactly above
  if (configured.search !== "") return false
  const withSlash = (path: string) => (path.endsWith("/") ? path : `${path}/`)
  return withSlash(requested.pathname).startsWith(withSlash(configured.pathname))
}

/** The tenant secret a server's registered OAuth client keeps its client secret in (when it was given one). */
export const mcpClientSecretName = (serverId: string) => `mcp-${serverId}.client_secret`

/** A server's configuration as the admin put it: the stored record without what the import added. */
export const mcpConfigOf = (server: McpServer): McpServerConfig => {
  const {
    authorize_expires_at: _,
    authorize_url: __,
    imported: ___,
    protocol_version: ____,
    refreshed_at: _____,
    server_id: ______,
    status: _______,
    ...config
  } = server
  return config
}

/**
 * A server's tool name as our tool id: `mcp.<server_id>.<name>`, the name lowercased with every run of other characters
 * than letters and digits made `_` (`Get-Weather` -> `get_weather`); a name that starts with a digit gets `t_` before it.
 */
export const mcpToolId = (serverId: string, name: string): string => {
  let normal = name.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "")
  if (normal === "") normal = "tool"
  if (!/^[a-z]/.test(normal)) normal = `t_${normal}`
  return `mcp.${serverId}.${normal}`.slice(0, 128)
}

/** The server id of an imported tool's id, if it is one. */
export const mcpServerOfTool = (toolId: string): string | undefined => {
  const match = /^mcp\.([a-z][a-z0-9_]{0,31})\./.exec(toolId)
  return match?.[1]
}
