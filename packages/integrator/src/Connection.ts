import { AuditLog } from "@altan/domain/AuditLog"
import { Connection, llmProvider } from "@altan/domain/Connection"
import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import { Egress } from "@altan/domain/Egress"
import { isClusterError, reaskOnBreak } from "@altan/domain/EntityCall"
import { NotFound, Unavailable, UpstreamFailed } from "@altan/domain/Errors"
import { parseEntityId, type TenantId } from "@altan/domain/Ids"
import { LlmBadResponse, LlmNotConfigured, LlmUnavailable } from "@altan/domain/Llm"
import { breakerMetric, callMetrics } from "@altan/domain/Metrics"
import type { Settings } from "@altan/domain/Settings"
import {
  ConnectionNeedsReauth,
  type Credential,
  policyOf,
  RateLimited,
  type ToolError,
  ToolFailed,
  toolFailedFields,
  type ToolResult,
  ToolWorker,
  UpstreamUnavailable
} from "@altan/domain/ToolWorker"
import { RedisError } from "@altan/redis/Redis"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { createHash } from "node:crypto"
import { ConnectionStore } from "./ConnectionStore.js"
import { LlmGateway } from "./LlmGateway.js"
import type { OAuthStatus } from "./OAuth.js"
import {
  decodeTokens,
  encodeTokens,
  isStale,
  OAuthStore,
  requestTokens,
  revokeToken,
  type Tokens,
  tokensSecret
} from "./OAuth.js"
import * as RateBudget from "./RateBudget.js"
import { backoff, makeBreaker, ResilienceConfig } from "./Resilience.js"
import { SecretStore } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

/**
 * The integrator's stores fail with a `RedisError` defect while their Redis is unreachable: for the caller that is
 * `Unavailable` (nothing was executed; asking again later is safe), not a crash.
 */
const storeUnavailable = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Unavailable, R> =>
  Effect.catchAllDefect(effect, (defect) =>
    defect instanceof RedisError
      ? Effect.fail(
        new Unavailable({ message: `the connection's configuration cannot be read now: ${defect.message}` })
      )
      : Effect.die(defect))

/**
 * `Connection[tenant/provider]`: the tenant's relationship with one upstream. Tool calls go on to
 * `ToolWorker[tenant/tool]`; an LLM connection (`llm:<id>`) answers turns through the gateway and,
 * when its LLM keeps failing, hands the turn to the next fallback's connection.
 */
export const ConnectionLive = Layer.unwrapEffect(Effect.gen(function*() {
  const toolWorker = yield* ToolWorker.client
  const connections = yield* Connection.client
  const gateway = yield* LlmGateway
  const config = yield* TenantConfig
  const connections_ = yield* ConnectionStore
  const secrets = yield* SecretStore
  const oauthStore = yield* OAuthStore
  const resilience = yield* ResilienceConfig
  const audit = yield* AuditLog
  const egress = yield* Egress

  const clientSecretOf = (tenantId: TenantId, provider: string, config: OAuth2Connection) =>
    secrets.get(tenantId, config.client_secret_secret).pipe(
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
  const makeOAuthSession = (tenantId: TenantId, provider: string) => {
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

    const refreshed = (config: OAuth2Connection, stale: Tokens) =>
      Effect.gen(function*() {
        if (stale.refresh_token === undefined) {
          yield* needsReauth("the access token expired and the provider issued no refresh token")
          return yield* new ConnectionNeedsReauth({ provider })
        }
        const secret = yield* clientSecretOf(tenantId, provider, config)
        const next = yield* requestTokens(config, secret, {
          grant_type: "refresh_token",
          refresh_token: stale.refresh_token
        }, stale).pipe(
          Effect.provideService(Egress, egress),
          Effect.catchTag("InvalidGrant", (e) =>
            Effect.zipRight(needsReauth(e.description), Effect.fail(new ConnectionNeedsReauth({ provider }))))
        )
        yield* store(next)
        return next
      }).pipe(
        Effect.withSpan("Connection.refresh", {
          attributes: { "altan.tenant_id": tenantId, "altan.provider": provider },
          captureStackTrace: false
        })
      )

    return {
      holdsToken: () => tokens !== undefined,
      accessToken: (config: OAuth2Connection, force: boolean) =>
        Effect.gen(function*() {
          const fresh = (t: Tokens | undefined) => t !== undefined && !isStale(t, Date.now())
          if (!force && fresh(tokens)) return tokens!
          const seen = tokens
          // one refresh at a time; whoever waited finds the new token and does not refresh again
          return yield* lock.withPermits(1)(Effect.gen(function*() {
            if (tokens !== undefined && tokens !== seen && fresh(tokens)) return tokens
            const current = yield* load
            if (Option.isNone(current)) {
              const status = yield* oauthStore.getStatus(tenantId, provider)
              if (Option.isSome(status) && status.value.status === "needs_reauth") {
                return yield* new ConnectionNeedsReauth({ provider })
              }
              return yield* new ToolFailed({
                tool_id: provider,
                message: `the ${provider} connection is not authorized yet: ` +
                  `an admin must call POST /v1/connections/${provider}/authorize`,
                retryable: false
              })
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
          const secret = yield* clientSecretOf(tenantId, provider, config)
          const next = yield* requestTokens(config, secret, {
            grant_type: "authorization_code",
            code: grant.code,
            code_verifier: grant.code_verifier,
            redirect_uri: grant.redirect_uri
          }).pipe(
            Effect.provideService(Egress, egress),
            Effect.catchTag("InvalidGrant", (e) =>
              Effect.fail(
                new UpstreamFailed({ message: `the provider refused the authorization code: ${e.description}` })
              ))
          )
          yield* store(next)
          return next
        })),
      revoke: (config: OAuth2Connection) =>
        lock.withPermits(1)(Effect.gen(function*() {
          const current = yield* load
          const secret = Option.isSome(current) && config.revoke_url !== undefined
            ? yield* Effect.option(clientSecretOf(tenantId, provider, config))
            : Option.none()
          if (Option.isSome(current) && config.revoke_url !== undefined && Option.isNone(secret)) {
            // without the app's client secret the provider cannot be asked; the tokens are still forgotten here
            yield* Effect.logWarning(`${provider} tokens deleted without revocation: the app's client secret is gone`)
          }
          if (Option.isSome(current) && Option.isSome(secret)) {
            const t = current.value
            // revoking the refresh token ends the grant (RFC 7009 2.1); the access token too, where supported
            if (t.refresh_token !== undefined) {
              yield* revokeToken(config, secret.value, t.refresh_token, "refresh_token").pipe(
                Effect.provideService(Egress, egress)
              )
            }
            yield* revokeToken(config, secret.value, t.access_token, "access_token").pipe(
              Effect.provideService(Egress, egress)
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

  return Connection.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key: provider, tenantId } = parseEntityId(address.entityId)
      const oauth = makeOAuthSession(tenantId, provider)
      const breaker = makeBreaker(resilience, breakerMetric(tenantId, provider))
      yield* Effect.addFinalizer(() => breaker.stop)
      // one budget per tenant and provider: this actor is its only holder across the cluster
      const budget = yield* RateBudget.make({
        tenant: tenantId,
        provider,
        // what the provider counts arrives a little after what we grant: stay inside its window too
        windowMargin: "100 millis",
        ...RateBudget.effectiveLimits(provider, undefined)
      })
      const metrics = callMetrics(tenantId, provider)

      /** One audit record per tool call as the agent asked for it: outcome, attempts, latency, fallback. */
      const auditInvoke = (
        payload: {
          readonly tool_id: string
          readonly task_id?: string | undefined
          readonly step_id?: string | undefined
        }
      ) =>
      <
        A extends { readonly attempts?: number | undefined; readonly served_by?: string | undefined },
        E extends { readonly _tag: string; readonly code?: string },
        R
      >(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          const started = yield* Clock.currentTimeMillis
          const exit = yield* Effect.exit(effect)
          const latency_ms = (yield* Clock.currentTimeMillis) - started
          const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          yield* audit.record({
            tenant_id: tenantId,
            action: "tool.invoke",
            target: `tool:${payload.tool_id}`,
            outcome: Exit.isSuccess(exit) ? "ok" : "failed",
            latency_ms,
            details: {
              provider,
              ...(payload.task_id ? { task_id: payload.task_id } : {}),
              ...(payload.step_id ? { step_id: payload.step_id } : {}),
              ...(Exit.isSuccess(exit) && exit.value.attempts ? { attempts: exit.value.attempts } : {}),
              ...(Exit.isSuccess(exit) && exit.value.served_by ? { served_by: exit.value.served_by } : {}),
              ...(Option.isSome(error) ? { error: error.value.code ?? error.value._tag } : {})
            }
          })
          return yield* exit
        })
      /**
       * The credential of this connection for one call: an API key read from its secret, or the OAuth2
       * access token this actor holds (refreshed here, once, when it is about to expire).
       */
      const credential = (forceRefresh = false) =>
        Effect.gen(function*() {
          const connection = yield* connections_.get(tenantId, provider)
          if (Option.isNone(connection)) return Option.none<Credential>()
          if (connection.value.type === "oauth2") {
            const token = yield* oauth.accessToken(connection.value, forceRefresh)
            return Option.some<Credential>({ header: "Authorization", value: token })
          }
          const { header, prefix, secret } = connection.value
          const value = yield* secrets.get(tenantId, secret).pipe(
            Effect.mapError((e) => new ToolFailed({ tool_id: provider, message: e.message, retryable: true }))
          )
          return Option.map(value, (v): Credential => ({ header, value: Redacted.make(prefix + Redacted.value(v)) }))
        })
      return Connection.of({
        Invoke: ({ payload }) => {
          // the step's attempt, for the tool worker's ledger: one execution per key, whatever is redelivered
          const executionKey = payload.task_id && payload.step_id && payload.attempt !== undefined
            ? `${payload.task_id}/${payload.step_id}/${payload.attempt}`
            : undefined
          // derived from the step, so every attempt and every redelivery of it sends the same key
          const idempotencyKey = payload.task_id && payload.step_id
            ? createHash("sha256").update(
              // the input too: a replayed conversation may reuse a step id for a different call
              `${tenantId}\u0000${payload.task_id}\u0000${payload.step_id}\u0000${payload.tool_id}\u0000${
                JSON.stringify(payload.input) ?? ""
              }`
            )
              .digest("base64url")
            : undefined
          // the call never reached a tool worker: safe to try again
          const notDelivered = (e: { readonly _tag: string }) =>
            Effect.fail(
              new ToolFailed({
                tool_id: payload.tool_id,
                message: `the tool service could not take the call (${e._tag})`,
                retryable: true,
                not_applied: true
              })
            )
          /**
           * One execution (`try_` of this call) at the tool worker. Its execution key makes the worker run it at most
           * once: asking again for the same key (the request was redelivered, or this attempt is resumed after a
           * crash) gets the first execution's outcome.
           */
          const execute = (settings: Settings, forceRefresh: boolean, try_: string): Effect.Effect<
            Omit<ToolResult, "attempts">,
            ToolError
          > =>
            Effect.flatMap(
              credential(forceRefresh),
              (cred) =>
                toolWorker(`${tenantId}/${payload.tool_id}`).Execute({
                  input: payload.input,
                  ...(Option.isSome(cred) ? { credential: cred.value } : {}),
                  egress_allowlist: settings.egress_allowlist,
                  base_urls: Object.fromEntries(
                    Object.entries(settings.providers).flatMap(([p, v]) => (v.base_url ? [[p, v.base_url]] : []))
                  ),
                  llms: payload.llms ??
                    (settings.default_llm ? [settings.default_llm, ...settings.fallback_llms] : []),
                  ...(payload.task_id ? { task_id: payload.task_id } : {}),
                  ...(payload.step_id ? { step_id: payload.step_id } : {}),
                  ...(idempotencyKey ? { idempotency_key: idempotencyKey } : {}),
                  ...(executionKey ? { execution_key: `${executionKey}/${try_}` } : {})
                })
            ).pipe(
              Effect.catchTags({
                MailboxFull: notDelivered,
                PersistenceError: notDelivered,
                // the same request is still being processed there (it was resent): ask again under a new request,
                // which joins the execution in flight by its key
                AlreadyProcessingMessage: () => Effect.delay(execute(settings, forceRefresh, try_), "200 millis")
              }),
              // the transport broke mid-request (a runner died while answering): with an execution key, asking again
              // is safe, the worker answers what became of it
              (call) => (executionKey === undefined ? call : reaskOnBreak(call))
            )
          // a 401 with an OAuth2 token: the provider dropped it early; refresh once and try again
          const once = (settings: Settings, try_: number) =>
            execute(settings, false, String(try_)).pipe(
              Effect.catchIf(
                (e) => e._tag === "ToolFailed" && e.status === 401 && oauth.holdsToken(),
                () => execute(settings, true, `${try_}r`)
              )
            )
          const policy = payload.policy ?? { idempotent: false, idempotency_key: false }
          // a write is tried again only when that cannot apply it twice
          const safeToRepeat = policy.idempotent || policy.idempotency_key
          const maxAttempts = Math.max(1, policy.max_attempts ?? resilience.maxAttempts)
          const maxRetryAfter = Duration.toMillis(resilience.maxRetryAfter)

          /** Attempts until one succeeds or a retry cannot help; each attempt passes the breaker first. */
          // whether this call holds the breaker's half-open probe, which it must give back however it ends
          let probe = false
          const settle = (outcome: Effect.Effect<void>) =>
            Effect.zipRight(payload.resume ? Effect.void : outcome, Effect.sync(() => void (probe = false)))
          const withAttempts = (e: ToolFailed, attempts: number) => new ToolFailed({ ...toolFailedFields(e), attempts })
          const call = Effect.gen(function*() {
            let lastError: string | undefined
            let lastFailure: ToolFailed | undefined
            for (let attempt = 1;; attempt++) {
              // a resumed attempt replays tries the tool service may have run already: neither the breaker nor the
              // budget is asked (nor charged) again
              const admitted = payload.resume ? { ok: true as const, probe: false } : yield* breaker.admit
              // the circuit opened while this call was retrying: its own last failure says more
              if (!("ok" in admitted) && lastFailure !== undefined) {
                return yield* Effect.fail(withAttempts(lastFailure, attempt - 1))
              }
              if (!("ok" in admitted)) {
                return yield* new UpstreamUnavailable({
                  provider,
                  message:
                    `${provider} is failing: calls are paused for ${Math.ceil(admitted.retryAfterMs / 1000)} s ` +
                    `after ${resilience.breakerThreshold} consecutive failures`,
                  retry_after_ms: admitted.retryAfterMs
                })
              }
              probe = admitted.probe
              const settings = yield* config.getSettings(tenantId)
              yield* budget.reconfigure(RateBudget.effectiveLimits(provider, settings.providers[provider]))
              // once a sync task's caller has stopped waiting (its timeout passed, it got 202), the call is
              // background work: no deadline to fail fast on, no priority over async calls
              const waiting = payload.deadline === undefined || (yield* Clock.currentTimeMillis) < payload.deadline
              if (!payload.resume) {
                yield* budget.acquire({
                  priority: waiting ? payload.priority ?? "sync" : "async",
                  deadline: waiting ? payload.deadline : undefined,
                  key: RateBudget.keyOf(payload.tool_id, payload.input)
                }).pipe(
                  Effect.catchTag("RateLimited", (e) =>
                    Effect.zipRight(
                      metrics.call("rate_limited"),
                      Effect.fail(
                        new RateLimited({ provider, message: e.message, retry_after_ms: e.retry_after_ms })
                      )
                    ))
                )
              }
              const exit = yield* Effect.exit(once(settings, attempt))
              if (Exit.isSuccess(exit)) {
                yield* settle(breaker.success)
                yield* budget.observe({ status: 200, headers: exit.value.rate_headers })
                yield* metrics.call("ok")
                const { rate_headers: _, ...result } = exit.value
                return { ...result, attempts: attempt, ...(lastError ? { last_error: lastError } : {}) }
              }
              const error = Cause.failureOption(exit.cause)
              // a defect says nothing about the upstream; the probe, if this was it, is given back on exit
              if (Option.isNone(error)) return yield* Effect.failCause(exit.cause)
              const e = error.value
              // not found, invalid input, lost grant: nothing was learnt about the upstream's health
              if (e._tag !== "ToolFailed") {
                yield* settle(breaker.abandon)
                return yield* Effect.fail(e)
              }
              // a client error means the upstream is up; only transient failures count against it
              // no status: the call never got an answer from the upstream (e.g. our own configuration is missing)
              yield* settle(e.retryable ? breaker.failure : e.status !== undefined ? breaker.success : breaker.abandon)
              lastFailure = e
              yield* metrics.call("failed")
              if (e.status !== undefined) {
                yield* budget.observe({ status: e.status, headers: e.rate_headers, retry_after_ms: e.retry_after_ms })
              }
              lastError = e.message
              const retry = e.retryable && attempt < maxAttempts && (safeToRepeat || e.not_applied === true)
              // a Retry-After pauses the provider's budget, which the next attempt waits for when it acquires
              const paused = e.status !== undefined && e.retry_after_ms !== undefined
              const wait = !retry ? 0 : paused ? 0 : yield* backoff(resilience, attempt, e.retry_after_ms)
              const now = yield* Clock.currentTimeMillis
              if (
                !retry || wait > maxRetryAfter || (e.retry_after_ms ?? 0) > maxRetryAfter ||
                (payload.deadline !== undefined && now < payload.deadline && now + wait > payload.deadline)
              ) {
                return yield* Effect.fail(withAttempts(e, attempt))
              }
              yield* Effect.annotateCurrentSpan("altan.retries", attempt)
              yield* Effect.sleep(Duration.millis(wait))
            }
          }).pipe(Effect.onExit(() => (probe ? settle(breaker.abandon) : Effect.void)))
          const tried = [...(payload.tried ?? []), payload.tool_id]
          const fallback = payload.fallback
          // a task restricted to some tools gets no fallback outside them
          const noFallback = fallback === undefined || tried.includes(fallback) ||
            (payload.allowed_tools !== undefined && !payload.allowed_tools.includes(fallback))
          return (noFallback ? call : call.pipe(
            // the fallback answers only when a retry might have helped; a bad request stays the caller's to fix
            Effect.catchIf(
              (e) => (e._tag === "ToolFailed" && e.retryable) || e._tag === "UpstreamUnavailable",
              (failed) =>
                Effect.gen(function*() {
                  const spec = yield* toolWorker(`${tenantId}/${fallback}`).Describe().pipe(
                    Effect.catchAll(() => Effect.fail(failed))
                  )
                  const result = yield* connections(`${tenantId}/${spec.provider}`).Invoke({
                    ...payload,
                    tool_id: fallback,
                    tried,
                    policy: policyOf(spec),
                    ...(spec.fallback ? { fallback: spec.fallback } : { fallback: undefined })
                  }).pipe(Effect.catchIf(isClusterError, () => Effect.fail(failed)))
                  return { ...result, served_by: result.served_by ?? fallback }
                }).pipe(
                  Effect.withSpan("Connection.fallback", {
                    attributes: { "altan.tool_id": fallback },
                    captureStackTrace: false
                  })
                )
            )
          )).pipe(
            storeUnavailable,
            auditInvoke(payload),
            Effect.tapError((e) =>
              Effect.logWarning(`tool call failed: ${e.message}`).pipe(
                Effect.annotateLogs({ "tenant.id": tenantId, provider, "tool.id": payload.tool_id, error: e._tag })
              )
            ),
            Effect.withSpan("Connection.invoke", {
              attributes: {
                "altan.tenant_id": tenantId,
                "altan.provider": provider,
                "altan.tool_id": payload.tool_id,
                ...(payload.task_id ? { "altan.task_id": payload.task_id } : {})
              },
              captureStackTrace: false
            })
          )
        },

        CompleteAuthorization: ({ payload }) =>
          Effect.gen(function*() {
            const connection = yield* connections_.get(tenantId, provider)
            if (Option.isNone(connection) || connection.value.type !== "oauth2") {
              return yield* new NotFound({ message: `no OAuth2 connection for ${provider}` })
            }
            const tokens = yield* oauth.exchange(connection.value, payload)
            return {
              provider,
              type: "oauth2" as const,
              status: "connected" as const,
              scopes: tokens.scopes,
              expires_at: tokens.expires_at === undefined ? null : new Date(tokens.expires_at).toISOString()
            }
          }).pipe(
            Effect.tapBoth({
              onFailure: (e) =>
                audit.record({
                  tenant_id: tenantId,
                  action: "config.change",
                  target: `connection:${provider}`,
                  outcome: "failed",
                  details: { operation: "authorization_callback", error: e.code }
                }),
              onSuccess: (info) =>
                audit.record({
                  tenant_id: tenantId,
                  action: "config.change",
                  target: `connection:${provider}`,
                  outcome: "ok",
                  details: { operation: "authorization_callback", scopes: info.scopes }
                })
            }),
            Effect.withSpan("Connection.completeAuthorization", {
              attributes: { "altan.tenant_id": tenantId, "altan.provider": provider },
              captureStackTrace: false
            })
          ),

        Disconnect: () =>
          Effect.gen(function*() {
            const connection = yield* connections_.get(tenantId, provider)
            if (Option.isSome(connection) && connection.value.type === "oauth2") {
              yield* oauth.revoke(connection.value)
            }
            return yield* connections_.remove(tenantId, provider)
          }).pipe(
            Effect.withSpan("Connection.disconnect", {
              attributes: { "altan.tenant_id": tenantId, "altan.provider": provider },
              captureStackTrace: false
            })
          ),

        Complete: ({ payload }) =>
          Effect.gen(function*() {
            if (!provider.startsWith("llm:")) {
              return yield* new LlmNotConfigured({ message: `${provider} is not an LLM connection` })
            }
            const llmId = provider.slice(4)
            const admitted = yield* breaker.admit
            const first = "ok" in admitted
              ? yield* Effect.either(gateway.complete(tenantId, llmId, payload)).pipe(
                Effect.tap((r) =>
                  Either.isRight(r) || r.left._tag === "LlmBadResponse"
                    ? breaker.success
                    : r.left._tag === "LlmUnavailable"
                    ? breaker.failure
                    : breaker.abandon
                ),
                // an LLM call is a call to a third party too; a missing configuration never reached one
                Effect.tap((r) =>
                  Either.isRight(r)
                    ? metrics.call("ok")
                    : r.left._tag === "LlmNotConfigured"
                    ? Effect.void
                    : metrics.call("failed")
                ),
                Effect.onInterrupt(() => (admitted.probe ? breaker.abandon : Effect.void))
              )
              : Either.left(
                new LlmUnavailable({
                  message: `LLM "${llmId}" is failing: calls are paused for ${
                    Math.ceil(admitted.retryAfterMs / 1000)
                  } s`,
                  attempts: [{ llm_id: llmId, outcome: "failed", error: "circuit open", duration_ms: 0 }]
                })
              )
            const [next, ...rest] = payload.fallbacks
            if (Either.isRight(first)) return first.right
            const failed = first.left
            if (next === undefined || failed._tag === "LlmNotConfigured") return yield* failed
            const unreachable = (e: { readonly _tag: string }) =>
              Effect.fail(
                new LlmUnavailable({ message: `fallback ${next} could not be reached (${e._tag})`, attempts: [] })
              )
            const fallback = yield* Effect.either(
              connections(`${tenantId}/${llmProvider(next)}`).Complete({ ...payload, fallbacks: rest }).pipe(
                Effect.catchIf(isClusterError, unreachable)
              )
            )
            if (Either.isRight(fallback)) {
              return { ...fallback.right, attempts: [...failed.attempts, ...fallback.right.attempts] }
            }
            const f = fallback.left
            if (f._tag === "LlmNotConfigured" || f._tag === "Unavailable") {
              return yield* f
            }
            const attempts = [...failed.attempts, ...f.attempts]
            return yield* (f._tag === "LlmUnavailable"
              ? new LlmUnavailable({ message: f.message, attempts })
              : new LlmBadResponse({ message: f.message, attempts }))
          }).pipe(
            storeUnavailable,
            (effect) =>
              Effect.gen(function*() {
                const started = yield* Clock.currentTimeMillis
                const exit = yield* Effect.exit(effect)
                yield* audit.record({
                  tenant_id: tenantId,
                  action: "llm.call",
                  target: provider,
                  outcome: Exit.isSuccess(exit) ? "ok" : "failed",
                  latency_ms: (yield* Clock.currentTimeMillis) - started,
                  details: {
                    ...(payload.task_id ? { task_id: payload.task_id } : {}),
                    ...(Exit.isSuccess(exit)
                      ? {
                        llm_id: exit.value.llm_id,
                        attempts: exit.value.attempts.length,
                        prompt_tokens: exit.value.usage.prompt_tokens,
                        completion_tokens: exit.value.usage.completion_tokens
                      }
                      : {})
                  }
                })
                return yield* exit
              }),
            // the answer's token usage (fallbacks' included), per the GenAI conventions
            Effect.tap((completion) =>
              Effect.annotateCurrentSpan({
                "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
                "altan.llm_id": completion.llm_id
              })
            ),
            Effect.withSpan("Connection.complete", {
              attributes: {
                "altan.tenant_id": tenantId,
                "altan.provider": provider,
                "gen_ai.operation.name": "chat",
                ...(payload.task_id ? { "altan.task_id": payload.task_id } : {})
              },
              captureStackTrace: false
            })
          )
      })
    }),
    // a defect fails the message it happened in, never restarts the connection (which would replay the others)
    { concurrency: "unbounded", maxIdleTime: "15 minutes", disableFatalDefects: true }
  )
}))
