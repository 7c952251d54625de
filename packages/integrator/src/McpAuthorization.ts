import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import { Egress, EgressDenied, type EgressFailed, type EgressMethod } from "@altan/domain/Egress"
import { InvalidRequest, UpstreamFailed } from "@altan/domain/Errors"
import { mcpClientSecretName } from "@altan/domain/McpServers"
import {
  buildDiscoveryUrls,
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractWWWAuthenticateParams,
  registerClient
} from "@modelcontextprotocol/sdk/client/auth.js"
import { checkResourceAllowed } from "@modelcontextprotocol/sdk/shared/auth-utils.js"
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js"
import { LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"

/**
 * The OAuth 2.1 set-up of an MCP server that is protected per the MCP authorization specification: where its
 * authorization server is (RFC 9728 protected resource metadata, found from the server's `401` or its well-known URL),
 * that server's endpoints (RFC 8414, else OpenID Connect discovery), and a client there (the one given, else one
 * registered now, RFC 7591). What comes out is an ordinary oauth2 connection whose `resource` (RFC 8707) is the MCP
 * server, so the rest (PKCE S256 consent, tokens in the vault, single-flight refresh, revocation) is the connection's.
 */

/** Why the set-up stopped: the admin's to fix (`invalid`), or the servers' (`upstream`). */
class SetUpFailed extends Error {
  constructor(message: string, readonly kind: "invalid" | "upstream") {
    super(message)
  }
}

/**
 * A `fetch` for the SDK's discovery and registration helpers through the egress guard, with the tenant's allowlist:
 * metadata documents may redirect (GET, no credential); a registration is never re-posted elsewhere.
 */
const guardedFetch = (
  egress: Egress["Type"],
  allowHosts: ReadonlyArray<string>,
  runtime: Runtime.Runtime<never>,
  refused: { last?: EgressDenied | EgressFailed },
  signal: AbortSignal
): FetchLike =>
async (url, init) => {
  const method = (init?.method ?? "GET").toUpperCase() as EgressMethod
  const headers: Record<string, string> = {}
  new Headers(init?.headers).forEach((value, name) => void (headers[name] = value))
  const exit = await Runtime.runPromiseExit(
    runtime,
    egress.request({
      url: String(url),
      method,
      headers,
      ...(typeof init?.body === "string" ? { body: init.body } : {}),
      allowHosts,
      timeoutMs: 15_000,
      maxBytes: 1_000_000,
      followRedirects: method === "GET"
    }),
    // the set-up's deadline passed: its request in flight is given up
    { signal }
  )
  if (Exit.isFailure(exit)) {
    const failure = Cause.squash(exit.cause)
    refused.last = failure as EgressDenied | EgressFailed
    throw failure instanceof Error ? failure : new Error(String(failure))
  }
  const answer = exit.value
  const empty = [204, 205, 304].includes(answer.status) || answer.body.byteLength === 0
  return new Response(empty ? null : answer.body, { status: answer.status, headers: answer.headers })
}

/** What the admin gave for the set-up (`PUT /v1/mcp/servers/{server_id}` with `auth: oauth2`). */
export interface SetUpOptions {
  readonly serverId: string
  readonly url: string
  readonly clientId?: string | undefined
  readonly clientSecretSecret?: string | undefined
  readonly scopes?: ReadonlyArray<string> | undefined
  /** Where the consent returns: the edge's callback, registered with the client. */
  readonly redirectUri: string
  readonly allowHosts: ReadonlyArray<string>
}

/** The connection to store, and the client secret a registration gave, for the vault (`mcpClientSecretName`). */
export interface SetUp {
  readonly connection: OAuth2Connection
  readonly clientSecret?: Redacted.Redacted | undefined
  readonly authorizationServer: string
  readonly registered: boolean
}

/**
 * The longest a set-up takes, all its requests together (each is also bounded by 15 s): past it the set-up fails and
 * changes nothing. The edge waits for longer (see `HttpMcpServers`), so it never answers before the set-up has ended.
 */
export const setUpDeadline = Duration.seconds(20)

const sameIssuer = (a: string, b: string) => a.replace(/\/+$/, "") === b.replace(/\/+$/, "")

/**
 * Discovers an MCP server's authorization server and sets up a client there (see the module's comment). Every request
 * goes through the egress guard with the tenant's allowlist: the server's and its authorization server's hosts must be
 * in it. `InvalidRequest`: the server is not OAuth-protected as the specification says, its authorization server offers
 * no registration and no `client_id` was given, a server answered what it should not (404, a redirect, no metadata), or a
 * host is not allowed; `UpstreamFailed`: a server failed, or the whole set-up took longer than `setUpDeadline`.
 */
export const setUp = Effect.fn("McpAuthorization.setUp", { captureStackTrace: false })(
  function*(options: SetUpOptions) {
    yield* Effect.annotateCurrentSpan("altan.mcp_server", options.serverId)
    const egress = yield* Egress
    const runtime = yield* Effect.runtime<never>()
    const refused: { last?: EgressDenied | EgressFailed } = {}
    const invalid = (message: string) => new SetUpFailed(message, "invalid")
    const upstream = (message: string) => new SetUpFailed(message, "upstream")

    return yield* Effect.tryPromise({
      try: async (signal): Promise<SetUp> => {
        const fetchFn = guardedFetch(egress, options.allowHosts, runtime, refused, signal)
        // an unauthenticated MCP request: a protected server answers 401 and may say where its metadata is
        const probe = await fetchFn(options.url, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
          body: JSON.stringify({
            jsonrpc: "2.0",
            id: 0,
            method: "initialize",
            params: {
              protocolVersion: LATEST_PROTOCOL_VERSION,
              capabilities: {},
              clientInfo: { name: "altan", version: "0.1.0" }
            }
          })
        })
        await probe.body?.cancel().catch(() => undefined)
        if (probe.status >= 300 && probe.status < 400) {
          const location = probe.headers.get("location")
          throw invalid(
            `the MCP server answered an unauthenticated request with a redirect (HTTP ${probe.status}` +
              (location ? ` to ${location.slice(0, 300)}` : "") +
              "), which a POST does not follow: give the URL of its MCP endpoint itself"
          )
        }
        if (probe.status === 404 || probe.status === 405) {
          throw invalid(
            `the MCP server answered an unauthenticated request with HTTP ${probe.status}: ` +
              "is the URL its Streamable HTTP MCP endpoint?"
          )
        }
        if (probe.status >= 500) {
          throw upstream(`the MCP server answered an unauthenticated request with HTTP ${probe.status}`)
        }
        if (probe.status >= 200 && probe.status < 300) {
          throw invalid(
            `the MCP server answered an unauthenticated request with HTTP ${probe.status}, not 401: ` +
              "it is not OAuth-protected (leave auth out, or use an api_key connection)"
          )
        }
        if (probe.status !== 401) {
          throw invalid(
            `the MCP server answered an unauthenticated request with HTTP ${probe.status}, not 401: ` +
              "an OAuth-protected MCP server answers 401 (with where its authorization server is)"
          )
        }
        const challenge = extractWWWAuthenticateParams(probe)

        const resourceMetadata = await discoverOAuthProtectedResourceMetadata(
          options.url,
          challenge.resourceMetadataUrl ? { resourceMetadataUrl: challenge.resourceMetadataUrl } : {},
          fetchFn
        ).catch((e) => {
          if (e instanceof SetUpFailed || refused.last !== undefined) throw e
          // 404 at the URL its 401 named, or at the well-known ones: the server does not say where to authorize
          if (/does not implement/.test(messageOf(e))) {
            throw invalid(
              "the MCP server answered 401 but publishes no protected resource metadata (RFC 9728) at " +
                (challenge.resourceMetadataUrl?.href ?? "its well-known URL") +
                ": it does not say which authorization server to use"
            )
          }
          throw upstream(`the MCP server has no usable protected resource metadata (RFC 9728): ${messageOf(e)}`)
        })
        // RFC 9728 3.3: the metadata must be of this very server (or a parent of its URL)
        const resource = resourceMetadata.resource
        if (!checkResourceAllowed({ requestedResource: options.url, configuredResource: resource })) {
          throw upstream(`the protected resource metadata is of ${resource}, not of ${options.url}`)
        }
        const authorizationServer = resourceMetadata.authorization_servers?.[0]
        if (authorizationServer === undefined) {
          throw invalid("the MCP server's protected resource metadata (RFC 9728) names no authorization_servers")
        }

        const metadata = await discoverAuthorizationServerMetadata(authorizationServer, { fetchFn }).catch((e) => {
          if (refused.last !== undefined) throw e
          throw upstream(`the authorization server ${authorizationServer} has no usable metadata: ${messageOf(e)}`)
        })
        if (metadata === undefined) {
          throw invalid(
            `the authorization server ${authorizationServer} publishes no metadata: none of ` +
              buildDiscoveryUrls(authorizationServer).map(({ url }) => url.href).join(", ") +
              " answered it (RFC 8414, OpenID Connect discovery)"
          )
        }
        // RFC 8414 3.3: metadata of another issuer is not this server's
        if (!sameIssuer(metadata.issuer, authorizationServer)) {
          throw upstream(`the metadata of ${authorizationServer} is of another issuer (${metadata.issuer})`)
        }
        // the specification: no PKCE S256 said, no authorization
        if (!(metadata.code_challenge_methods_supported ?? []).includes("S256")) {
          throw upstream(`the authorization server ${authorizationServer} does not support PKCE with S256`)
        }
        const scopes = options.scopes ??
          challenge.scope?.split(" ").filter((s) => s !== "") ??
          resourceMetadata.scopes_supported ??
          []
        // OpenID Connect discovery documents have it too, though the SDK's type of them does not say so
        const revocation = (metadata as { readonly revocation_endpoint?: unknown }).revocation_endpoint
        const endpoints = {
          authorize_url: metadata.authorization_endpoint,
          token_url: metadata.token_endpoint,
          ...(typeof revocation === "string" && /^https?:\/\//.test(revocation) ? { revoke_url: revocation } : {})
        }
        // RFC 8414 2: absent, the token endpoint takes client_secret_basic
        const methods = metadata.token_endpoint_auth_methods_supported ?? ["client_secret_basic"]

        if (options.clientId !== undefined) {
          return {
            connection: {
              type: "oauth2",
              client_id: options.clientId,
              ...(options.clientSecretSecret ? { client_secret_secret: options.clientSecretSecret } : {}),
              ...endpoints,
              scopes,
              client_auth: methods.includes("client_secret_post") ? "post" : "basic",
              resource,
              token_egress: "tenant_allowlist"
            },
            authorizationServer,
            registered: false
          }
        }
        if (metadata.registration_endpoint === undefined) {
          throw invalid(
            `the authorization server ${authorizationServer} offers no dynamic client registration (RFC 7591): ` +
              "register a client there (redirect URI " + options.redirectUri + ") and give its client_id " +
              "(and client_secret_secret, the name of a tenant secret holding its secret)"
          )
        }
        const method = methods.includes("client_secret_post")
          ? "client_secret_post"
          : methods.includes("client_secret_basic")
          ? "client_secret_basic"
          : "none"
        const client = await registerClient(authorizationServer, {
          metadata,
          clientMetadata: {
            client_name: "Altan",
            redirect_uris: [options.redirectUri],
            grant_types: ["authorization_code", "refresh_token"],
            response_types: ["code"],
            // no `scope`: what the client may ask for is the authorization request's to say (an authorization server
            // may refuse a registration naming its resource servers' scopes)
            token_endpoint_auth_method: method
          },
          fetchFn
        }).catch((e) => {
          if (refused.last !== undefined) throw e
          throw upstream(`the authorization server ${authorizationServer} refused the registration: ${messageOf(e)}`)
        })
        const registeredMethod = client.token_endpoint_auth_method ?? method
        return {
          connection: {
            type: "oauth2",
            client_id: client.client_id,
            ...(client.client_secret ? { client_secret_secret: mcpClientSecretName(options.serverId) } : {}),
            ...endpoints,
            scopes,
            client_auth: registeredMethod === "client_secret_basic" ? "basic" : "post",
            resource,
            token_egress: "tenant_allowlist"
          },
          ...(client.client_secret ? { clientSecret: Redacted.make(client.client_secret) } : {}),
          authorizationServer,
          registered: true
        }
      },
      catch: (e) => e
    }).pipe(
      Effect.mapError((e) =>
        refused.last !== undefined && EgressDenied.is(refused.last)
          ? new InvalidRequest({
            code: "egress_denied",
            message: `egress_denied: ${refused.last.message}: put the host in the tenant's egress_allowlist`,
            details: { field: "url" }
          })
          : refused.last !== undefined
          ? new UpstreamFailed({ message: `the OAuth set-up could not reach a server: ${refused.last.message}` })
          : e instanceof SetUpFailed && e.kind === "invalid"
          ? new InvalidRequest({ code: "invalid_mcp_server", message: e.message, details: { field: "auth" } })
          : new UpstreamFailed({ message: `the OAuth set-up of the MCP server failed: ${messageOf(e)}` })
      ),
      // one deadline for all of it: past it nothing was stored, and the edge is still waiting to say so
      Effect.timeoutFail({
        duration: setUpDeadline,
        onTimeout: () =>
          new UpstreamFailed({
            message: `the OAuth set-up of the MCP server did not finish within ${
              Duration.format(setUpDeadline)
            }: a server was too slow`
          })
      })
    )
  }
)

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e)).slice(0, 300)
