import { AuditLog } from "@altan/audit/AuditLog"
import { Connection, ConnectionRequired } from "@altan/domain/Connection"
import { Egress } from "@altan/domain/Egress"
import { isClusterError } from "@altan/domain/EntityCall"
import { InvalidRequest, NotFound, Unavailable, UpstreamFailed } from "@altan/domain/Errors"
import { parseEntityId } from "@altan/domain/Ids"
import { mcpClientSecretName, mcpConfigOf, mcpProviderOf, type McpServerConfig } from "@altan/domain/McpServers"
import { breakerMetric, callMetrics } from "@altan/domain/Metrics"
import { TenantTasks } from "@altan/domain/TenantTasks"
import { catalogId, ToolFailed, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { makeBreaker } from "./Breaker.js"
import { ConnectionStore } from "./ConnectionStore.js"
import { clusterUnavailable } from "./internal/clusterCall.js"
import { notifyConnectionReady } from "./internal/wakeTasks.js"
import { LlmGateway } from "./LlmGateway.js"
import * as LlmTurn from "./LlmTurn.js"
import * as McpAuthorization from "./McpAuthorization.js"
import { beginAuthorization, maxStateTtlMs, OAuthStore } from "./OAuth.js"
import * as OAuthSession from "./OAuthSession.js"
import * as RateBudget from "./RateBudget.js"
import { ResilienceConfig } from "./Resilience.js"
import { SecretStore } from "./SecretStore.js"
import { storeUnavailable } from "./StoreUnavailable.js"
import { TenantConfig } from "./TenantConfig.js"
import * as ToolCall from "./ToolCall.js"
import * as UsageMeter from "./UsageMeter.js"

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
  const connectionStore = yield* ConnectionStore
  const secrets = yield* SecretStore
  const oauthStore = yield* OAuthStore
  const resilience = yield* ResilienceConfig
  const audit = yield* AuditLog
  const egress = yield* Egress
  const tenantTasks = yield* TenantTasks.client
  const meter = yield* UsageMeter.UsageMeter

  return Connection.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key: provider, tenantId } = parseEntityId(address.entityId)
      const oauth = OAuthSession.make(
        {
          secrets,
          oauthStore,
          egress,
          allowlist: Effect.map(config.getSettings(tenantId), (s) => s.egress_allowlist)
        },
        tenantId,
        provider
      )
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

      const toolCalls: ToolCall.ToolCallContext = {
        tenantId,
        provider,
        toolWorker,
        connections,
        config,
        connectionStore,
        secrets,
        oauth,
        breaker,
        budget,
        metrics,
        resilience,
        audit
      }
      /** The audit record of an OAuth2 callback: the connection's configuration changed, or failed to. */
      const authorizationRecorded = (outcome: "ok" | "failed", details: Record<string, unknown>) =>
        audit.record({
          tenant_id: tenantId,
          action: "config.change",
          target: `connection:${provider}`,
          outcome,
          details: { operation: "authorization_callback", ...details }
        })
      const turns: LlmTurn.LlmTurnContext = {
        tenantId,
        provider,
        gateway,
        connections,
        breaker,
        metrics,
        audit,
        meter,
        config
      }
      /** A call made (it answered, or failed at the tool) counts against the tenant's `tool_calls` budget. */
      const countCall = <A, E>(exit: Exit.Exit<A, E>) =>
        Exit.isSuccess(exit) || Option.exists(Cause.failureOption(exit.cause), ToolFailed.is)
          ? Effect.flatMap(Clock.currentTimeMillis, (nowMs) => meter.add(tenantId, { tool_calls: 1 }, nowMs))
          : Effect.void
      const spanOptions = {
        attributes: { "altan.tenant_id": tenantId, "altan.provider": provider },
        captureStackTrace: false
      }
      /**
       * A call that needs this connection, missing or to be authorized again, carries where the user consents when
       * the tenant's OAuth2 app is configured: a fresh single-use authorization, as `POST .../authorize` starts one.
       */
      const withAuthorizeUrl = (e: ConnectionRequired, redirectUri: string | undefined) =>
        Effect.gen(function*() {
          if (redirectUri === undefined || e.authorize_url !== undefined) return e
          const connection = yield* connectionStore.get(tenantId, provider)
          if (Option.isNone(connection) || connection.value.type !== "oauth2") return e
          const url = yield* beginAuthorization(
            oauthStore,
            tenantId,
            provider,
            connection.value,
            redirectUri,
            Date.now() + maxStateTtlMs
          )
          return new ConnectionRequired({ provider: e.provider, reason: e.reason, authorize_url: url })
        })

      /**
       * A remote MCP server's tools imported with this connection's credential: a token the server refuses (401) is
       * refreshed, once, and the import asked again. An oauth2 connection's token goes only to the server it is for
       * (its `resource`, else `InvalidRequest`); an `auth: oauth2` server without an oauth2 connection is
       * `ConnectionRequired`, never asked without its credential.
       */
      const importMcpServer = Effect.fn("Connection.importMcpServer", spanOptions)(
        function*(serverId: string, server: McpServerConfig) {
          yield* Effect.annotateCurrentSpan("altan.mcp_server", serverId)
          const target = { server_id: serverId, url: server.url, auth: server.auth }
          const refusal = ToolCall.mcpRefusal(provider, yield* connectionStore.get(tenantId, provider), target)
          if (typeof refusal === "string") {
            return yield* new InvalidRequest({
              code: "invalid_mcp_server",
              message: refusal,
              details: { field: "connection" }
            })
          }
          if (refusal !== undefined) return yield* refusal
          const settings = yield* config.getSettings(tenantId)
          const once = (force: boolean) =>
            Effect.flatMap(
              ToolCall.credential(toolCalls, force, target),
              (credential) =>
                toolWorker(catalogId(tenantId)).ImportMcpServer({
                  server_id: serverId,
                  config: server,
                  ...(Option.isSome(credential) ? { credential: credential.value } : {}),
                  egress_allowlist: settings.egress_allowlist
                })
            )
          return yield* once(false).pipe(
            Effect.catchIf(
              (e) => UpstreamFailed.is(e) && e.details?.["status"] === 401 && oauth.holdsToken(),
              () => once(true)
            ),
            Effect.catchIf(isClusterError, (e) => Effect.fail(clusterUnavailable(e))),
            Effect.catchTag("ToolFailed", (e) => Effect.fail(new UpstreamFailed({ message: e.message })))
          )
        }
      )
      /** The tenant's OAuth-protected MCP servers whose connection this is: imported once a grant is given. */
      const importAuthorizedServers = Effect.gen(function*() {
        const servers = yield* toolWorker(catalogId(tenantId)).ListMcpServers()
        for (const server of servers) {
          if (server.auth !== "oauth2" || mcpProviderOf(server) !== provider) continue
          yield* importMcpServer(server.server_id, mcpConfigOf(server)).pipe(
            Effect.catchAll((e) =>
              Effect.logWarning(`could not import the tools of MCP server ${server.server_id}: ${e.message}`)
            )
          )
        }
      }).pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("could not import the tenant's MCP servers", cause)),
        Effect.annotateLogs({ "tenant.id": tenantId, provider })
      )

      return Connection.of({
        Invoke: ({ payload }) =>
          Effect.gen(function*() {
            // a resumed attempt was let through when it started
            if (!payload.resume) {
              const settings = yield* config.getSettings(tenantId)
              yield* UsageMeter.admit(meter, tenantId, settings.budgets, ["tool_calls"]).pipe(storeUnavailable)
            }
            return yield* ToolCall.invoke(toolCalls, payload).pipe(Effect.onExit(countCall))
          }).pipe(
            Effect.catchIf(
              (e): e is ConnectionRequired => ConnectionRequired.is(e) && e.provider === provider,
              (e) => Effect.flip(withAuthorizeUrl(e, payload.redirect_uri))
            )
          ),

        Admit: Effect.fn("Connection.admit", spanOptions)(function*({ payload }) {
          const settings = yield* config.getSettings(tenantId)
          return yield* UsageMeter.admit(meter, tenantId, settings.budgets, payload.budgets).pipe(storeUnavailable)
        }),

        Ready: Effect.fn("Connection.ready", spanOptions)(function*() {
          const connection = yield* connectionStore.get(tenantId, provider)
          if (Option.isNone(connection)) return false
          const config = connection.value
          if (config.type === "oauth2") {
            // only a missing or lost grant says no; any other failure is the call's to meet and report
            return yield* oauth.accessToken(config, false).pipe(
              Effect.as(true),
              Effect.catchAll((e) => Effect.succeed(!ConnectionRequired.is(e)))
            )
          }
          return yield* secrets.get(tenantId, config.secret).pipe(
            Effect.map(Option.isSome),
            Effect.mapError((e) => new Unavailable({ message: e.message }))
          )
        }),

        CompleteAuthorization: Effect.fn("Connection.completeAuthorization", spanOptions)(
          function*({ payload }) {
            const connection = yield* connectionStore.get(tenantId, provider)
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
          },
          Effect.tapBoth({
            onFailure: (e) => authorizationRecorded("failed", { error: e.code }),
            // the tasks waiting for this connection go on
            onSuccess: (info) =>
              Effect.zipRight(
                authorizationRecorded("ok", { scopes: info.scopes }),
                Effect.zipRight(importAuthorizedServers, notifyConnectionReady(tenantTasks, tenantId, provider))
              )
          })
        ),

        Disconnect: Effect.fn("Connection.disconnect", spanOptions)(function*() {
          const connection = yield* connectionStore.get(tenantId, provider)
          if (Option.isSome(connection) && connection.value.type === "oauth2") {
            yield* oauth.revoke(connection.value)
          }
          return yield* connectionStore.remove(tenantId, provider)
        }),

        ImportMcpServer: ({ payload }) => importMcpServer(payload.server_id, payload.config),

        SetUpMcpAuthorization: Effect.fn("Connection.setUpMcpAuthorization", spanOptions)(function*({ payload }) {
          const { config: server, redirect_uri, server_id } = payload
          const settings = yield* config.getSettings(tenantId)
          const made = yield* McpAuthorization.setUp({
            serverId: server_id,
            url: server.url,
            clientId: server.client_id,
            clientSecretSecret: server.client_secret_secret,
            scopes: server.scopes,
            redirectUri: redirect_uri,
            allowHosts: settings.egress_allowlist
          }).pipe(Effect.provideService(Egress, egress))
          // another server or client: the old grant is revoked and its tokens forgotten first
          const previous = yield* connectionStore.get(tenantId, provider)
          if (Option.isSome(previous) && previous.value.type === "oauth2") yield* oauth.revoke(previous.value)
          if (made.clientSecret !== undefined) {
            yield* secrets.put(tenantId, mcpClientSecretName(server_id), made.clientSecret).pipe(
              Effect.mapError((e) => new Unavailable({ message: e.message }))
            )
          }
          yield* connectionStore.put(tenantId, provider, made.connection)
          yield* Effect.logInfo(
            `MCP server ${server_id}: oauth2 connection set up at ${made.authorizationServer}` +
              (made.registered ? " (client registered)" : "")
          ).pipe(Effect.annotateLogs({ "tenant.id": tenantId, provider }))
          return { authorization_server: made.authorizationServer, registered: made.registered }
        }),

        Complete: ({ payload }) => LlmTurn.complete(turns, payload)
      })
    }),
    // a defect fails the message it happened in, never restarts the connection (which would replay the others)
    { concurrency: "unbounded", maxIdleTime: "15 minutes", disableFatalDefects: true }
  )
}))
