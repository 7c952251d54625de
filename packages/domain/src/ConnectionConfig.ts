import * as Schema from "effect/Schema"
import { HttpUrl } from "./LlmConfig.js"
import { SecretName } from "./Secret.js"

/** A provider name: a vendor (`slack`, `salesforce`) or an LLM connection (`llm:<id>`). */
export const ProviderName = Schema.String.pipe(
  Schema.pattern(/^[a-z][a-z0-9_-]{0,63}$/, {
    message: () => "provider must be 1-64 lowercase letters, digits, _ or -"
  })
)

/** An API key or custom token: the secret's value, after `prefix`, in `header`, on every call to the provider. */
export const ApiKeyConnection = Schema.Struct({
  type: Schema.Literal("api_key"),
  secret: SecretName,
  header: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9-]{1,64}$/, { message: () => "header must be an HTTP header name" })),
    { default: () => "Authorization" }
  ),
  prefix: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(64)), { default: () => "" })
})

/** The tenant's OAuth app for a provider (authorization code + PKCE). */
export const OAuth2Connection = Schema.Struct({
  type: Schema.Literal("oauth2"),
  client_id: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(512)),
  /**
   * The name of the tenant secret holding the app's client secret. Unset: a public client (the token endpoint gets the
   * `client_id` alone, as OAuth 2.1 allows with PKCE).
   */
  client_secret_secret: Schema.optional(SecretName),
  authorize_url: HttpUrl,
  token_url: HttpUrl,
  /** RFC 7009 revocation endpoint; tokens are revoked there when the connection is deleted. */
  revoke_url: Schema.optional(HttpUrl),
  /** Scopes to request; empty: the minimum the provider's built-in tools need. */
  scopes: Schema.optionalWith(Schema.Array(Schema.String.pipe(Schema.pattern(/^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/))), {
    default: () => []
  }),
  /** How the client authenticates at the token endpoint: form body (default) or HTTP Basic. */
  client_auth: Schema.optionalWith(Schema.Literal("post", "basic"), { default: () => "post" as const }),
  /**
   * RFC 8707 resource indicator: the API the tokens are for, sent on the authorization request and on every token
   * request (code and refresh), so the tokens are bound to it (an MCP server's URL).
   */
  resource: Schema.optional(HttpUrl),
  /**
   * `tenant_allowlist`: the token and revocation endpoints are reached only where the tenant's `egress_allowlist` (and
   * the operator's `EGRESS_ALLOW_HOSTS`) allow, as the discovery that found them was; set on the connections an MCP
   * server's OAuth set-up makes. Unset: any public host.
   */
  token_egress: Schema.optional(Schema.Literal("tenant_allowlist"))
})
export type OAuth2Connection = typeof OAuth2Connection.Type

/** Body of `PUT /v1/connections/{provider}`. */
export const ConnectionConfig = Schema.Union(ApiKeyConnection, OAuth2Connection)
export type ConnectionConfig = typeof ConnectionConfig.Type

/**
 * A connection as the API shows it: never a token or key. `missing_secret`: the secret it names (`secret`, or an
 * OAuth app's `client_secret_secret`) is not stored (`PUT /v1/secrets/{name}`), so no call can use it yet;
 * `pending`: an OAuth connection not authorized yet; `needs_reauth`: its grant was refused at refresh.
 */
export const ConnectionInfo = Schema.Struct({
  provider: Schema.String,
  type: Schema.Literal("api_key", "oauth2"),
  status: Schema.Literal("connected", "needs_reauth", "pending", "missing_secret"),
  scopes: Schema.Array(Schema.String),
  expires_at: Schema.NullOr(Schema.String)
})
export type ConnectionInfo = typeof ConnectionInfo.Type

/** Answer of `POST /v1/connections/{provider}/authorize`: where to send the tenant's user. */
export const AuthorizeResponse = Schema.Struct({
  authorize_url: Schema.String,
  /** When the `state` in the URL stops being accepted. */
  expires_at: Schema.String
})
