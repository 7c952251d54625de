import { ConnectionRequired } from "@altan/domain/Connection"
import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import { Egress } from "@altan/domain/Egress"
import { Unavailable, UpstreamFailed } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type { OAuthStatus, OAuthStore } from "./OAuth.js"
import { decodeTokens, encodeTokens, isStale, requestTokens, revokeToken, type Tokens, tokensSecret } from "./OAuth.js"
import type { SecretStore } from "./SecretStore.js"

/** What an OAuth session works with: the vault, the connection statuses and the guarded HTTP client. */
export interface Services {
  readonly secrets: SecretStore["Type"]
  readonly oauthStore: OAuthStore["Type"]
  readonly egress: Egress["Type"]
  /**
   * The tenant's egress allowlist, which the token and revocation requests of a connection with `token_egress:
   * tenant_allowlist` (one an MCP server's set-up made) keep to. Unset: none (the operator's hosts only).
   */
  readonly allowlist?: Effect.Effect<ReadonlyArray<string>> | undefined
}

/** The longest a revocation (both tokens) is waited for before the tokens are forgotten anyway. */
export const revocationTimeout = "10 seconds"

/** The OAuth2 tokens of one connection, held by its `Connection` actor. */
export type OAuthSession = ReturnType<typeof make>

const clientSecretOf = (
  secrets: SecretStore["Type"],
  tenantId: TenantId,
  provider: string,
  config: OAuth2Connection
): Effect.Effect<Redacted.Redacted | undefined, UpstreamFailed | Unavailable> =>
  // a public client has none
  config.client_secret_secret === undefined ? Effect.succeed(undefined) : secrets.get(
    tenantId,
    config.client_secret_secret
  ).pipe(
    Effect.mapError((e) => new Unavailable({ message: e.message })),
    Effect.flatMap(Option.match({
      onNone: () =>
        Effect.fail(
          new UpstreamFailed({
            message: `the client secret "${config.client_secret_secret}" of the ${provider} OAuth app is not set`,
            details: { configuration: true }
          })
        ),
      onSome: Effect.succeed
    }))
  )

/**
 * The OAuth2 tokens of one connection, owned by its actor: as the only holder cluster-wide, the
 * actor refreshes once however many calls wait, and rotated refresh tokens never race.
 */
export const make = (services: Services, tenantId: TenantId, provider: string) => {
  const { egress, oauthStore, secrets } = services
  const endpointEgress = Effect.map(services.allowlist ?? Effect.succeed([]), (allowHosts) => ({ allowHosts }))
  let tokens: Tokens | undefined
  const lock = Effect.unsafeMakeSemaphore(1)
  const statusOf = (t: Tokens): OAuthStatus => ({
    status: "connected",
    scopes: t.scopes,
    expires_at: t.expires_at === undefined ? null : new Date(t.expires_at).toISOString()
  })
  // held in memory first: a rotated refresh token is the only valid one, even if the vault write fails
  const store = (t: Tokens) =>
    Effect.sync(() => void (tokens = t)).pipe(
      Effect.zipRight(
        secrets.put(tenantId, tokensSecret(provider), encodeTokens(t)).pipe(
          Effect.retry({ times: 3, schedule: Schedule.exponential("100 millis") }),
          Effect.mapError((e) => new Unavailable({ message: e.message }))
        )
      ),
      Effect.zipRight(oauthStore.putStatus(tenantId, provider, statusOf(t)))
    )
  const load = Effect.gen(function*() {
    if (tokens !== undefined) return Option.some(tokens)
    const stored = yield* secrets.get(tenantId, tokensSecret(provider)).pipe(
      Effect.mapError((e) => new Unavailable({ message: e.message }))
    )
    const decoded = Option.flatMap(stored, decodeTokens)
    if (Option.isSome(decoded)) tokens = decoded.value
    return decoded
  })
  const needsReauth = (description: string) =>
    Effect.gen(function*() {
      const status = yield* oauthStore.getStatus(tenantId, provider)
      yield* oauthStore.putStatus(tenantId, provider, {
        status: "needs_reauth",
        scopes: Option.match(status, { onNone: () => [], onSome: (s) => s.scopes }),
        expires_at: null
      })
      tokens = undefined
      yield* secrets.delete(tenantId, tokensSecret(provider)).pipe(Effect.ignore)
      yield* Effect.logWarning(`${provider} connection needs reauthorization: ${description}`).pipe(
        Effect.annotateLogs({ "tenant.id": tenantId, provider })
      )
    })
  // a missing client secret is the tenant's to fix: trying again cannot help, nor is the provider unwell
  const toolError = (e: UpstreamFailed | Unavailable) =>
    new ToolFailed({
      tool_id: provider,
      message: `${provider} credentials: ${e.message}`,
      retryable: e.details?.["configuration"] !== true
    })

  const refreshed = Effect.fn("Connection.refresh", {
    attributes: { "altan.tenant_id": tenantId, "altan.provider": provider },
    captureStackTrace: false
  })(function*(config: OAuth2Connection, stale: Tokens) {
    if (stale.refresh_token === undefined) {
      yield* needsReauth("the access token expired and the provider issued no refresh token")
      return yield* new ConnectionRequired({ provider, reason: "needs_reauth" })
    }
    const secret = yield* clientSecretOf(secrets, tenantId, provider, config)
    const next = yield* requestTokens(
      config,
      secret,
      {
        grant_type: "refresh_token",
        refresh_token: stale.refresh_token
      },
      stale,
      yield* endpointEgress
    ).pipe(
      Effect.provideService(Egress, egress),
      Effect.catchTag(
        "InvalidGrant",
        (e) =>
          Effect.zipRight(
            needsReauth(e.description),
            Effect.fail(new ConnectionRequired({ provider, reason: "needs_reauth" }))
          )
      )
    )
    yield* store(next)
    return next
  })

  return {
    holdsToken: () => tokens !== undefined,
    accessToken: (config: OAuth2Connection, force: boolean) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const fresh = (t: Tokens | undefined) => t !== undefined && !isStale(t, now)
        if (!force && fresh(tokens)) return tokens!
        const seen = tokens
        // one refresh at a time; whoever waited finds the new token and does not refresh again
        return yield* lock.withPermits(1)(Effect.gen(function*() {
          if (tokens !== undefined && tokens !== seen && fresh(tokens)) return tokens
          const current = yield* load
          if (Option.isNone(current)) {
            const status = yield* oauthStore.getStatus(tenantId, provider)
            if (Option.isSome(status) && status.value.status === "needs_reauth") {
              return yield* new ConnectionRequired({ provider, reason: "needs_reauth" })
            }
            // configured, never authorized
            return yield* new ConnectionRequired({ provider, reason: "missing" })
          }
          if (!force && fresh(current.value)) return current.value
          if (force && current.value !== seen && fresh(current.value)) return current.value
          return yield* refreshed(config, current.value)
        }))
      }).pipe(
        Effect.catchTags({
          UpstreamFailed: (e) => Effect.fail(toolError(e)),
          Unavailable: (e) => Effect.fail(toolError(e))
        }),
        Effect.map((t) => Redacted.make(`${t.token_type === "bearer" ? "Bearer" : t.token_type} ${t.access_token}`))
      ),
    exchange: (config: OAuth2Connection, grant: { code: string; code_verifier: string; redirect_uri: string }) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const secret = yield* clientSecretOf(secrets, tenantId, provider, config)
        const next = yield* requestTokens(
          config,
          secret,
          {
            grant_type: "authorization_code",
            code: grant.code,
            code_verifier: grant.code_verifier,
            redirect_uri: grant.redirect_uri
          },
          undefined,
          yield* endpointEgress
        ).pipe(
          Effect.provideService(Egress, egress),
          Effect.catchTag("InvalidGrant", (e) =>
            Effect.fail(
              new UpstreamFailed({ message: `the provider refused the authorization code: ${e.description}` })
            ))
        )
        yield* store(next)
        return next
      })),
    /**
     * Revokes the grant at the provider (RFC 7009: the refresh token, then the access token), best effort: a provider
     * that cannot be reached, fails, or takes longer than `revocationTimeout` is logged (never a token) and the tokens
     * are forgotten here all the same, so a provider that is down never keeps a connection from being removed or
     * replaced.
     */
    revoke: (config: OAuth2Connection) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const current = yield* load
        const secret = Option.isSome(current) && config.revoke_url !== undefined
          ? yield* Effect.option(clientSecretOf(secrets, tenantId, provider, config))
          : Option.none()
        const log = (message: string) =>
          Effect.logWarning(message).pipe(Effect.annotateLogs({ "tenant.id": tenantId, provider }))
        if (Option.isSome(current) && config.revoke_url !== undefined && Option.isNone(secret)) {
          // without the app's client secret the provider cannot be asked; the tokens are still forgotten here
          yield* log(`${provider} tokens deleted without revocation: the app's client secret is gone`)
        }
        if (Option.isSome(current) && Option.isSome(secret)) {
          const t = current.value
          const allowHosts = yield* endpointEgress
          // revoking the refresh token ends the grant (RFC 7009 2.1); the access token too, where supported
          yield* Effect.gen(function*() {
            if (t.refresh_token !== undefined) {
              yield* revokeToken(config, secret.value, t.refresh_token, "refresh_token", allowHosts)
            }
            yield* revokeToken(config, secret.value, t.access_token, "access_token", allowHosts)
          }).pipe(
            Effect.provideService(Egress, egress),
            Effect.timeoutFail({
              duration: revocationTimeout,
              onTimeout: () => new UpstreamFailed({ message: `no answer within ${revocationTimeout}` })
            }),
            Effect.catchAll((e) => log(`${provider} tokens deleted without revocation at the provider: ${e.message}`))
          )
        }
        tokens = undefined
        yield* secrets.delete(tenantId, tokensSecret(provider)).pipe(
          Effect.mapError((e) => new Unavailable({ message: e.message }))
        )
        yield* oauthStore.removeStatus(tenantId, provider)
      }))
  }
}
