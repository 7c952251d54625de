import { AuditLog } from "@altan/audit/AuditLog"
import {
  type Connection,
  connectionId,
  ConnectionRequired,
  type InvokePayload,
  RateLimited,
  UpstreamUnavailable
} from "@altan/domain/Connection"
import type { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import { isClusterError, reaskOnBreak } from "@altan/domain/EntityCall"
import type { TenantId } from "@altan/domain/Ids"
import { canonicalResource, mcpServerOfTool, tokenIsFor } from "@altan/domain/McpServers"
import type { callMetrics } from "@altan/domain/Metrics"
import type { Settings } from "@altan/domain/Settings"
import {
  catalogId,
  type Credential,
  policyOf,
  type ToolError,
  ToolFailed,
  toolFailedFields,
  type ToolResult,
  type ToolWorker,
  toolWorkerId
} from "@altan/domain/ToolWorker"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { createHash } from "node:crypto"
import type { Breaker } from "./Breaker.js"
import type { ConnectionStore } from "./ConnectionStore.js"
import type { OAuthSession } from "./OAuthSession.js"
import * as RateBudget from "./RateBudget.js"
import type { ResilienceConfig } from "./Resilience.js"
import * as Retry from "./Retry.js"
import type { SecretStore } from "./SecretStore.js"
import { storeUnavailable } from "./StoreUnavailable.js"
import type { TenantConfig } from "./TenantConfig.js"

/** What one `Connection` actor holds for its tool calls: its tenant and provider, its breaker, budget and tokens. */
export interface ToolCallContext {
  readonly tenantId: TenantId
  readonly provider: string
  readonly toolWorker: Effect.Effect.Success<typeof ToolWorker.client>
  readonly connections: Effect.Effect.Success<typeof Connection.client>
  readonly config: TenantConfig["Type"]
  readonly connectionStore: ConnectionStore["Type"]
  readonly secrets: SecretStore["Type"]
  readonly oauth: OAuthSession
  readonly breaker: Breaker
  readonly budget: RateBudget.RateBudget
  readonly metrics: ReturnType<typeof callMetrics>
  readonly resilience: ResilienceConfig["Type"]
  readonly audit: AuditLog["Type"]
}

/** One audit record per tool call as the agent asked for it: outcome, attempts, latency, fallback. */
const auditInvoke = (
  { audit, provider, tenantId }: ToolCallContext,
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
  AuditLog.timed(effect, audit, (exit, latency_ms) => {
    const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
    return {
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
    }
  })
/** The remote MCP server a credential is for: where it is, and whether it is OAuth-protected. */
export interface McpTarget {
  readonly server_id: string
  readonly url: string
  readonly auth?: "oauth2" | undefined
}

/**
 * Why this connection's credential may not go to an MCP server: an `auth: oauth2` server takes an oauth2 connection's
 * token only (`ConnectionRequired` without one, so its calls wait for one), and an oauth2 connection's token goes only
 * to the server its RFC 8707 `resource` is (a token for another server or API is never sent to this one).
 */
export const mcpRefusal = (
  provider: string,
  connection: Option.Option<ConnectionConfig>,
  server: McpTarget
): ConnectionRequired | string | undefined => {
  if (server.auth === "oauth2" && (Option.isNone(connection) || connection.value.type !== "oauth2")) {
    return new ConnectionRequired({ provider, reason: "missing" })
  }
  if (
    Option.isSome(connection) && connection.value.type === "oauth2" &&
    !tokenIsFor(connection.value.resource, server.url)
  ) {
    const resource = connection.value.resource
    return `the oauth2 connection "${provider}" holds tokens for ${
      resource === undefined ? "no RFC 8707 resource" : canonicalResource(resource)
    }, not for the MCP server ${server.server_id} at ${canonicalResource(server.url)}: its token is not sent there`
  }
  return undefined
}

/**
 * The credential of this connection for one call: an API key read from its secret, or the OAuth2
 * access token this actor holds (refreshed here, once, when it is about to expire). For a call to a remote MCP server
 * (`mcp`), only one that may go there (`mcpRefusal`).
 */
export const credential = (
  { connectionStore, oauth, provider, secrets, tenantId }: ToolCallContext,
  forceRefresh = false,
  mcp?: McpTarget
) =>
  Effect.gen(function*() {
    const connection = yield* connectionStore.get(tenantId, provider)
    const refusal = mcp === undefined ? undefined : mcpRefusal(provider, connection, mcp)
    if (typeof refusal === "string") {
      return yield* new ToolFailed({ tool_id: provider, message: refusal, retryable: false, not_applied: true })
    }
    if (refusal !== undefined) return yield* refusal
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

/**
 * One tool call through the connection: the tenant's credential, the breaker and the rate budget before each attempt,
 * retries when they cannot apply a write twice, the tool's fallback when a retry might have helped, one audit record.
 */
export const invoke = Effect.fn("Connection.invoke", { captureStackTrace: false })((
  ctx: ToolCallContext,
  payload: InvokePayload
): Effect.Effect<ToolResult, ToolError> => {
  const { breaker, budget, config, connections, metrics, oauth, provider, resilience, tenantId, toolWorker } = ctx

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
  // a tool of a remote MCP server: the server as stored, whose URL its credential must be for
  const mcpServerId = mcpServerOfTool(payload.tool_id)
  const mcpTarget: Effect.Effect<Option.Option<McpTarget>, ToolFailed> = mcpServerId === undefined
    ? Effect.succeedNone
    : toolWorker(catalogId(tenantId)).GetMcpServer({ server_id: mcpServerId }).pipe(
      Effect.map(Option.some),
      Effect.catchAll((e) =>
        Effect.fail(
          new ToolFailed({
            tool_id: payload.tool_id,
            message: e._tag === "NotFound"
              ? `no MCP server ${mcpServerId}`
              : `the MCP server ${mcpServerId} could not be looked up (${e._tag})`,
            retryable: e._tag !== "NotFound",
            not_applied: true
          })
        )
      )
    )
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
      Effect.flatMap(mcpTarget, (mcp) => credential(ctx, forceRefresh, Option.getOrUndefined(mcp))),
      (cred) =>
        toolWorker(toolWorkerId(tenantId, payload.tool_id)).Execute({
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
        (e) => ToolFailed.is(e) && e.status === 401 && oauth.holdsToken(),
        () => execute(settings, true, `${try_}r`)
      )
    )
  const policy = payload.policy ?? { idempotent: false, idempotency_key: false }
  const safeToRepeat = policy.idempotent || policy.idempotency_key

  // whether this call holds the breaker's half-open probe, which it must give back however it ends
  let probe = false
  const settle = (outcome: Effect.Effect<void>) =>
    Effect.zipRight(payload.resume ? Effect.void : outcome, Effect.sync(() => void (probe = false)))
  const withAttempts = (e: ToolFailed, attempts: number) => new ToolFailed({ ...toolFailedFields(e), attempts })
  // the circuit opened while this call was retrying: its own last failure says more, and ends the retries
  let refused = false
  let lastFailure: ToolFailed | undefined

  /** One attempt: it passes the breaker and the budget first, and teaches both what became of it. */
  const attempt = (n: number) =>
    Effect.gen(function*() {
      if (n > 1) yield* Effect.annotateCurrentSpan("altan.retries", n - 1)
      // a resumed attempt replays tries the tool service may have run already: neither the breaker nor the
      // budget is asked (nor charged) again
      const admitted = payload.resume ? { ok: true as const, probe: false } : yield* breaker.admit
      if (!("ok" in admitted)) {
        refused = true
        return yield* Effect.fail(
          lastFailure !== undefined
            ? withAttempts(lastFailure, n - 1)
            : new UpstreamUnavailable({
              provider,
              message: `${provider} is failing: calls are paused for ${Math.ceil(admitted.retryAfterMs / 1000)} s ` +
                `after ${resilience.breakerThreshold} consecutive failures`,
              retry_after_ms: admitted.retryAfterMs
            })
        )
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
          Effect.catchTag("OverBudget", (e) =>
            Effect.zipRight(
              metrics.call("rate_limited"),
              Effect.fail(new RateLimited({ provider, message: e.message, retry_after_ms: e.retry_after_ms }))
            ))
        )
      }
      const exit = yield* Effect.exit(once(settings, n))
      if (Exit.isSuccess(exit)) {
        yield* settle(breaker.success)
        yield* budget.observe({ status: 200, headers: exit.value.rate_headers })
        yield* metrics.call("ok")
        const { rate_headers: _, ...result } = exit.value
        return result
      }
      const error = Cause.failureOption(exit.cause)
      // a defect says nothing about the upstream; the probe, if this was it, is given back on exit
      if (Option.isNone(error)) return yield* Effect.failCause(exit.cause)
      const e = error.value
      // not found, invalid input, lost grant: nothing was learnt about the upstream's health
      if (!ToolFailed.is(e)) {
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
      return yield* Effect.fail(e)
    })

  /** Attempts until one succeeds or a retry cannot help; a write is tried again only when that cannot apply it twice. */
  const call = Retry.retry(attempt, {
    maxAttempts: Math.max(1, policy.max_attempts ?? resilience.maxAttempts),
    baseDelay: resilience.baseDelay,
    maxDelay: resilience.maxDelay,
    maxWait: resilience.maxRetryAfter,
    deadline: payload.deadline,
    retryable: (e) => !refused && ToolFailed.is(e) && e.retryable && (safeToRepeat || e.not_applied === true),
    retryAfter: (e) => (ToolFailed.is(e) ? e.retry_after_ms : undefined),
    // a Retry-After pauses the provider's budget, which the next attempt waits for when it acquires
    waitedElsewhere: (e) => ToolFailed.is(e) && e.status !== undefined
  }).pipe(
    Effect.map(({ attempts, value }) => ({
      ...value,
      attempts,
      ...(lastFailure ? { last_error: lastFailure.message } : {})
    })),
    Effect.mapError(({ attempts, error }) => ToolFailed.is(error) && !refused ? withAttempts(error, attempts) : error),
    Effect.onExit(() => (probe ? settle(breaker.abandon) : Effect.void))
  )
  const tried = [...(payload.tried ?? []), payload.tool_id]
  const fallback = payload.fallback
  // a task restricted to some tools gets no fallback outside them
  const noFallback = fallback === undefined || tried.includes(fallback) ||
    (payload.allowed_tools !== undefined && !payload.allowed_tools.includes(fallback))
  return (noFallback ? call : call.pipe(
    // the fallback answers only when a retry might have helped; a bad request stays the caller's to fix
    Effect.catchIf(
      (e) => (ToolFailed.is(e) && e.retryable) || UpstreamUnavailable.is(e),
      Effect.fn("Connection.fallback", { attributes: { "altan.tool_id": fallback }, captureStackTrace: false })(
        function*(failed) {
          const spec = yield* toolWorker(toolWorkerId(tenantId, fallback)).Describe().pipe(
            Effect.catchAll(() => Effect.fail(failed))
          )
          const result = yield* connections(connectionId(tenantId, spec.provider)).Invoke({
            ...payload,
            tool_id: fallback,
            tried,
            policy: policyOf(spec),
            ...(spec.fallback ? { fallback: spec.fallback } : { fallback: undefined })
          }).pipe(Effect.catchIf(isClusterError, () => Effect.fail(failed)))
          return { ...result, served_by: result.served_by ?? fallback }
        }
      )
    )
  )).pipe(
    storeUnavailable,
    auditInvoke(ctx, payload),
    Effect.tapError((e) =>
      // a missing connection is the call's wait, not a failure of it (the task says what it waits for)
      (ConnectionRequired.is(e)
        ? Effect.logInfo(`tool call waits for the ${e.provider} connection (${e.reason})`)
        : Effect.logWarning(`tool call failed: ${e.message}`)).pipe(
          Effect.annotateLogs({ "tenant.id": tenantId, provider, "tool.id": payload.tool_id, error: e._tag })
        )
    )
  )
}, (effect, { provider, tenantId }, payload) =>
  // the call's attributes, on its span
  Effect.zipRight(
    Effect.annotateCurrentSpan({
      "altan.tenant_id": tenantId,
      "altan.provider": provider,
      "altan.tool_id": payload.tool_id,
      ...(payload.task_id ? { "altan.task_id": payload.task_id } : {})
    }),
    effect
  ))
