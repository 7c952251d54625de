import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import { Egress, type EgressResponse } from "@altan/domain/Egress"
import { UpstreamFailed } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { maskSecrets } from "@altan/domain/Secret"
import { Redis } from "@altan/redis/Redis"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { createHash, randomBytes } from "node:crypto"

// ---------------------------------------------------------------------------------------------------------------
// State kept between the authorize call and the callback, and each connection's status

/** An authorization in flight: what the callback needs, found by its single-use `state`. */
export const PendingAuthorization = Schema.Struct({
  tenant_id: Schema.String,
  provider: Schema.String,
  code_verifier: Schema.String,
  redirect_uri: Schema.String,
  expires_at: Schema.Number
})
export type PendingAuthorization = typeof PendingAuthorization.Type

/** What `GET /v1/connections` shows of an OAuth2 connection; tokens live in the vault, never here. */
export const OAuthStatus = Schema.Struct({
  status: Schema.Literal("connected", "needs_reauth", "pending"),
  scopes: Schema.Array(Schema.String),
  expires_at: Schema.NullOr(Schema.String)
})
export type OAuthStatus = typeof OAuthStatus.Type

export class OAuthStore extends Context.Tag("@altan/integrator/OAuthStore")<OAuthStore, {
  readonly putPending: (state: string, pending: PendingAuthorization) => Effect.Effect<void>
  /** The authorization of `state`, removed in the same step: a state is good for one callback only. */
  readonly takePending: (state: string) => Effect.Effect<Option.Option<PendingAuthorization>>
  readonly getStatus: (tenantId: TenantId, provider: string) => Effect.Effect<Option.Option<OAuthStatus>>
  readonly putStatus: (tenantId: TenantId, provider: string, status: OAuthStatus) => Effect.Effect<void>
  readonly removeStatus: (tenantId: TenantId, provider: string) => Effect.Effect<void>
}>() {}

/** How long a `state` is accepted (an admin's `POST .../authorize`; a waiting task's link lives as long as its wait). */
export const stateTtlMs = 10 * 60_000

/** The longest a `state` is kept, whoever asks: a consent link in a waiting task's event. */
export const maxStateTtlMs = 86_400_000

// states are stored by digest: a leaked store does not hand out usable states
const stateKey = (state: string) => createHash("sha256").update(state).digest("base64url")

export const layerMemory: Layer.Layer<OAuthStore> = Layer.sync(OAuthStore, () => {
  const pending = new Map<string, PendingAuthorization>()
  const statuses = new Map<string, OAuthStatus>()
  const key = (tenantId: TenantId, provider: string) => `${tenantId}\u0000${provider}`
  return {
    putPending: (state, p) =>
      Effect.sync(() => {
        const now = Date.now()
        for (const [k, v] of pending) if (v.expires_at < now) pending.delete(k)
        pending.set(stateKey(state), p)
      }),
    takePending: (state) =>
      Effect.sync(() => {
        const k = stateKey(state)
        const p = pending.get(k)
        pending.delete(k)
        return Option.filter(Option.fromNullable(p), (v) => v.expires_at > Date.now())
      }),
    getStatus: (tenantId, provider) => Effect.sync(() => Option.fromNullable(statuses.get(key(tenantId, provider)))),
    putStatus: (tenantId, provider, status) => Effect.sync(() => void statuses.set(key(tenantId, provider), status)),
    removeStatus: (tenantId, provider) => Effect.sync(() => void statuses.delete(key(tenantId, provider)))
  }
})

/**
 * In the process's Redis: pending states expire on their own; `GETDEL` makes taking one atomic across edges.
 * A failed command is a defect (the interface has no error channel).
 */
export const layerRedis = (options?: { readonly prefix?: string }): Layer.Layer<OAuthStore, never, Redis> =>
  Layer.effect(
    OAuthStore,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const prefix = options?.prefix ?? "altan"
      const redis = <A>(f: () => Promise<A>) => Effect.orDie(Effect.tryPromise(f))
      const decodePending = Schema.decodeUnknownSync(Schema.parseJson(PendingAuthorization))
      const decodeStatus = Schema.decodeUnknownSync(Schema.parseJson(OAuthStatus))
      const statusKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:oauth`
      return {
        putPending: (state, p) =>
          redis(() =>
            client.set(
              `${prefix}:oauth:state:${stateKey(state)}`,
              JSON.stringify(p),
              "PX",
              Math.max(1, p.expires_at - Date.now())
            )
          ).pipe(
            Effect.asVoid
          ),
        takePending: (state) =>
          redis(() => client.getdel(`${prefix}:oauth:state:${stateKey(state)}`)).pipe(
            Effect.map((json) =>
              Option.filter(Option.map(Option.fromNullable(json), decodePending), (p) => p.expires_at > Date.now())
            )
          ),
        getStatus: (tenantId, provider) =>
          redis(() => client.hget(statusKey(tenantId), provider)).pipe(
            Effect.map((json) => Option.map(Option.fromNullable(json), decodeStatus))
          ),
        putStatus: (tenantId, provider, status) =>
          redis(() => client.hset(statusKey(tenantId), provider, JSON.stringify(status))).pipe(Effect.asVoid),
        removeStatus: (tenantId, provider) =>
          redis(() => client.hdel(statusKey(tenantId), provider)).pipe(Effect.asVoid)
      }
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// PKCE and the authorization URL

export const randomToken = () => randomBytes(32).toString("base64url")

/** RFC 7636 S256 challenge of a verifier. */
export const challengeOf = (verifier: string) => createHash("sha256").update(verifier).digest("base64url")

/** The least each built-in provider's tools need, asked for when the tenant's app names no scopes. */
export const minimumScopes: Record<string, ReadonlyArray<string>> = {
  slack: ["chat:write", "channels:manage", "channels:history"],
  google: [
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/gmail.send",
    "https://www.googleapis.com/auth/gmail.readonly"
  ],
  salesforce: ["api", "refresh_token"],
  hubspot: ["crm.objects.contacts.write", "crm.objects.deals.write"],
  microsoft: ["offline_access", "ChannelMessage.Send", "Calendars.ReadWrite"]
}

export const scopesFor = (provider: string, config: OAuth2Connection): ReadonlyArray<string> =>
  config.scopes.length > 0 ? config.scopes : (minimumScopes[provider] ?? [])

export const authorizeUrl = (
  config: OAuth2Connection,
  scopes: ReadonlyArray<string>,
  params: { readonly state: string; readonly redirectUri: string; readonly codeVerifier: string }
): string => {
  const url = new URL(config.authorize_url)
  url.searchParams.set("response_type", "code")
  url.searchParams.set("client_id", config.client_id)
  url.searchParams.set("redirect_uri", params.redirectUri)
  if (scopes.length > 0) url.searchParams.set("scope", scopes.join(" "))
  url.searchParams.set("state", params.state)
  url.searchParams.set("code_challenge", challengeOf(params.codeVerifier))
  url.searchParams.set("code_challenge_method", "S256")
  if (config.resource !== undefined) url.searchParams.set("resource", config.resource)
  return url.href
}

/**
 * Starts an authorization of the tenant's OAuth2 app: a single-use state bound to the tenant and provider, kept with
 * its PKCE verifier until `expiresAt` (epoch ms), and the URL where the user consents.
 */
export const beginAuthorization = (
  store: OAuthStore["Type"],
  tenantId: TenantId,
  provider: string,
  config: OAuth2Connection,
  redirectUri: string,
  expiresAt: number
) =>
  Effect.gen(function*() {
    const state = randomToken()
    const codeVerifier = randomToken()
    yield* store.putPending(state, {
      tenant_id: tenantId,
      provider,
      code_verifier: codeVerifier,
      redirect_uri: redirectUri,
      expires_at: expiresAt
    })
    return authorizeUrl(config, scopesFor(provider, config), { state, redirectUri, codeVerifier })
  })

// ---------------------------------------------------------------------------------------------------------------
// The token endpoint

/** The tokens of a connection, as kept in the vault (one secret per connection). */
export const Tokens = Schema.Struct({
  access_token: Schema.String,
  refresh_token: Schema.optional(Schema.String),
  token_type: Schema.optionalWith(Schema.String, { default: () => "Bearer" }),
  /** Epoch milliseconds; absent when the provider did not say. */
  expires_at: Schema.optional(Schema.Number),
  issued_at: Schema.Number,
  scopes: Schema.Array(Schema.String)
})
export type Tokens = typeof Tokens.Type

export const encodeTokens = (tokens: Tokens) => Redacted.make(JSON.stringify(tokens))
export const decodeTokens = (value: Redacted.Redacted) =>
  Schema.decodeUnknownOption(Schema.parseJson(Tokens))(Redacted.value(value))

/** The vault name of a connection's tokens; it cannot clash with tenant secrets, whose names start alphanumeric. */
export const tokensSecret = (provider: string) => `_oauth.${provider}`

/** The provider refused the grant (`invalid_grant`): revoked, expired or already used. */
export class InvalidGrant extends Data.TaggedError("InvalidGrant")<{ readonly description: string }> {}

const TokenAnswer = Schema.Struct({
  access_token: Schema.String.pipe(Schema.minLength(1)),
  token_type: Schema.optional(Schema.String),
  expires_in: Schema.optional(Schema.Union(Schema.Number, Schema.NumberFromString)),
  refresh_token: Schema.optional(Schema.String),
  scope: Schema.optional(Schema.String)
})

const ErrorAnswer = Schema.Struct({ error: Schema.String, error_description: Schema.optional(Schema.String) })

const parseJson = (response: EgressResponse): unknown => {
  try {
    return JSON.parse(new TextDecoder().decode(response.body))
  } catch {
    return undefined
  }
}

const hostOf = (url: string) => new URL(url).host

/** Where a connection's token and revocation requests may go: the tenant's egress allowlist, for those that need it. */
export interface EndpointEgress {
  /** The tenant's `egress_allowlist`, for a connection whose `token_egress` is `tenant_allowlist`. */
  readonly allowHosts?: ReadonlyArray<string> | undefined
}

/** The hosts a connection's endpoints may be asked at: any public one, or (`token_egress`) the tenant's allowlist. */
export const endpointHosts = (config: OAuth2Connection, egress: EndpointEgress | undefined) =>
  config.token_egress === "tenant_allowlist" ? (egress?.allowHosts ?? []) : "any-public" as const

/**
 * A form POST to one of the provider's endpoints with the app's client credentials, through the
 * egress guard (the URLs are the tenant's: they must not reach private addresses). A connection an MCP server's
 * set-up made (`token_egress: tenant_allowlist`) reaches only where the tenant's allowlist lets its discovery reach.
 */
const post = (
  url: string,
  config: OAuth2Connection,
  clientSecret: Redacted.Redacted | undefined,
  form: Record<string, string>,
  endpointEgress?: EndpointEgress
) =>
  Effect.gen(function*() {
    const egress = yield* Egress
    const body = new URLSearchParams(form)
    const headers: Record<string, string> = {
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json"
    }
    if (clientSecret === undefined) {
      // a public client: its id, no secret (PKCE binds the code to whoever began the authorization)
      body.set("client_id", config.client_id)
    } else if (config.client_auth === "basic") {
      // RFC 6749 2.3.1: each part form-encoded before base64
      const id = encodeURIComponent(config.client_id)
      const secret = encodeURIComponent(Redacted.value(clientSecret))
      headers.authorization = `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`
    } else {
      body.set("client_id", config.client_id)
      body.set("client_secret", Redacted.value(clientSecret))
    }
    return yield* egress.request({
      url,
      method: "POST",
      headers,
      body: body.toString(),
      allowHosts: endpointHosts(config, endpointEgress),
      timeoutMs: 15_000,
      // the form holds the client secret and a code or refresh token: it is never re-posted elsewhere
      followRedirects: false
    }).pipe(
      Effect.mapError((e) =>
        new UpstreamFailed({
          message: `${hostOf(url)} could not be reached: ${e.message}`,
          details: { provider_host: hostOf(url) }
        })
      )
    )
  })

/** Exchanges a code or a refresh token for tokens. `invalid_grant` is told apart: it means "authorize again". */
export const requestTokens: (
  config: OAuth2Connection,
  clientSecret: Redacted.Redacted | undefined,
  form: Record<string, string>,
  previous?: Tokens,
  endpointEgress?: EndpointEgress
) => Effect.Effect<Tokens, UpstreamFailed | InvalidGrant, Egress> = Effect.fn("OAuth.requestTokens", {
  captureStackTrace: false
})(
  function*(config, clientSecret, form, previous, endpointEgress) {
    yield* Effect.annotateCurrentSpan("altan.oauth.grant_type", form.grant_type)
    // RFC 8707: every token request names the resource the tokens are for
    const response = yield* post(
      config.token_url,
      config,
      clientSecret,
      config.resource !== undefined ? { ...form, resource: config.resource } : form,
      endpointEgress
    )
    const json = parseJson(response)
    // the provider may echo what it was sent in its error text
    const sent = [clientSecret && Redacted.value(clientSecret), form.refresh_token, form.code, form.code_verifier]
    const host = hostOf(config.token_url)
    if (response.status < 200 || response.status >= 300) {
      const error = Schema.decodeUnknownOption(ErrorAnswer)(json)
      if (Option.isSome(error) && error.value.error === "invalid_grant") {
        return yield* new InvalidGrant({
          description: maskSecrets(error.value.error_description ?? "invalid_grant", sent).slice(0, 300)
        })
      }
      return yield* new UpstreamFailed({
        message: `the token endpoint of ${host} answered HTTP ${response.status}${
          Option.isSome(error) ? ` (${maskSecrets(error.value.error, sent).slice(0, 100)})` : ""
        }`,
        details: { provider_host: host, status: response.status }
      })
    }
    const answer = Schema.decodeUnknownOption(TokenAnswer)(json)
    if (Option.isNone(answer)) {
      return yield* new UpstreamFailed({
        message: `the token endpoint of ${host} answered without a usable access_token`,
        details: { provider_host: host }
      })
    }
    const now = yield* Clock.currentTimeMillis
    const { access_token, expires_in, refresh_token, scope, token_type } = answer.value
    return {
      access_token,
      // a refresh answer without a new refresh token keeps the old one (RFC 6749 6)
      ...(refresh_token ?? previous?.refresh_token
        ? { refresh_token: refresh_token ?? previous!.refresh_token! }
        : {}),
      token_type: token_type ?? "Bearer",
      ...(expires_in !== undefined && expires_in > 0 ? { expires_at: now + expires_in * 1000 } : {}),
      issued_at: now,
      scopes: scope !== undefined ? scope.split(/[ ,]+/).filter((s) => s !== "") : (previous?.scopes ?? [])
    }
  }
)

/** RFC 7009 revocation of one token; the provider answers 200 even for tokens it no longer knows. */
export const revokeToken: (
  config: OAuth2Connection,
  clientSecret: Redacted.Redacted | undefined,
  token: string,
  hint: "refresh_token" | "access_token",
  endpointEgress?: EndpointEgress
) => Effect.Effect<void, UpstreamFailed, Egress> = Effect.fn("OAuth.revoke", { captureStackTrace: false })(
  function*(config, clientSecret, token, hint, endpointEgress) {
    if (config.revoke_url === undefined) return
    const response = yield* post(
      config.revoke_url,
      config,
      clientSecret,
      { token, token_type_hint: hint },
      endpointEgress
    )
    // 400 unsupported_token_type: the provider does not revoke that kind; nothing left to do for it
    if (response.status >= 200 && response.status < 300) return
    const error = Schema.decodeUnknownOption(ErrorAnswer)(parseJson(response))
    if (Option.isSome(error) && error.value.error === "unsupported_token_type") return
    return yield* new UpstreamFailed({
      message: `revocation at ${hostOf(config.revoke_url)} failed with HTTP ${response.status}`,
      details: { provider_host: hostOf(config.revoke_url), status: response.status }
    })
  }
)

/** Whether the access token should be refreshed now: within a minute (or a quarter of its life) of expiry. */
export const isStale = (tokens: Tokens, now: number) => {
  if (tokens.expires_at === undefined) return false
  const lifetime = tokens.expires_at - tokens.issued_at
  return tokens.expires_at - now <= Math.min(60_000, lifetime / 4)
}
