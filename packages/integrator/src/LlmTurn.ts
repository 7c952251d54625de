import { AuditLog } from "@altan/audit/AuditLog"
import type { BudgetExhausted, CompletePayload, Connection } from "@altan/domain/Connection"
import { llmConnectionId } from "@altan/domain/Connection"
import { isClusterError } from "@altan/domain/EntityCall"
import { Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { type Completion, LlmBadResponse, type LlmError, LlmNotConfigured, LlmUnavailable } from "@altan/domain/Llm"
import { costOf } from "@altan/domain/LlmConfig"
import type { callMetrics } from "@altan/domain/Metrics"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type { Breaker } from "./Breaker.js"
import type { LlmGateway } from "./LlmGateway.js"
import { storeUnavailable } from "./StoreUnavailable.js"
import type { TenantConfig } from "./TenantConfig.js"
import { admit, type UsageMeter } from "./UsageMeter.js"

/** What one LLM connection (`llm:<id>`) holds for its turns. */
export interface LlmTurnContext {
  readonly tenantId: TenantId
  readonly provider: string
  readonly gateway: LlmGateway["Type"]
  readonly connections: Effect.Effect.Success<typeof Connection.client>
  readonly breaker: Breaker
  readonly metrics: ReturnType<typeof callMetrics>
  readonly audit: AuditLog["Type"]
  readonly meter: UsageMeter["Type"]
  readonly config: TenantConfig["Type"]
}

/**
 * One LLM turn: this connection's LLM through the gateway, behind its breaker; when it fails, the next fallback's
 * connection answers, and the attempts of both are kept.
 */
export const complete: (
  ctx: LlmTurnContext,
  payload: CompletePayload
) => Effect.Effect<Completion, LlmError | Unavailable | BudgetExhausted> = Effect.fn("Connection.complete", {
  attributes: { "gen_ai.operation.name": "chat" },
  captureStackTrace: false
})(
  function*({ breaker, config, connections, gateway, meter, metrics, provider, tenantId }, payload) {
    yield* Effect.annotateCurrentSpan({
      "altan.tenant_id": tenantId,
      "altan.provider": provider,
      ...(payload.task_id ? { "altan.task_id": payload.task_id } : {})
    })
    if (!provider.startsWith("llm:")) {
      return yield* new LlmNotConfigured({ message: `${provider} is not an LLM connection` })
    }
    const llmId = provider.slice(4)
    // the tenant's LLM budgets, if spent, stop the turn before any model is asked
    yield* admit(meter, tenantId, (yield* config.getSettings(tenantId)).budgets, ["llm_tokens", "cost_usd"])
    const admitted = yield* breaker.admit
    const first = "ok" in admitted
      ? yield* Effect.either(gateway.complete(tenantId, llmId, payload)).pipe(
        Effect.tap((r) =>
          Either.isRight(r) || LlmBadResponse.is(r.left)
            ? breaker.success
            : LlmUnavailable.is(r.left)
            ? breaker.failure
            : breaker.abandon
        ),
        // an LLM call is a call to a third party too; a missing configuration never reached one
        Effect.tap((r) =>
          Either.isRight(r)
            ? metrics.call("ok")
            : LlmNotConfigured.is(r.left)
            ? Effect.void
            : metrics.call("failed")
        ),
        Effect.onInterrupt(() => (admitted.probe ? breaker.abandon : Effect.void))
      )
      : Either.left(
        new LlmUnavailable({
          message: `LLM "${llmId}" is failing: calls are paused for ${Math.ceil(admitted.retryAfterMs / 1000)} s`,
          attempts: [{ llm_id: llmId, outcome: "failed", error: "circuit open", duration_ms: 0 }]
        })
      )
    const [next, ...rest] = payload.fallbacks
    if (Either.isRight(first)) {
      // what this LLM's answer spent: its tokens, and their price where the LLM's configuration gives one
      const { completion_tokens, prompt_tokens } = first.right.usage
      const llm = yield* config.getLlm(tenantId, llmId)
      const cost = llm._tag === "Some" ? costOf(llm.value, prompt_tokens, completion_tokens) : 0
      yield* meter.add(
        tenantId,
        { llm_tokens: prompt_tokens + completion_tokens, cost_usd: cost },
        yield* Clock.currentTimeMillis
      )
      return first.right
    }
    const failed = first.left
    if (next === undefined || LlmNotConfigured.is(failed)) return yield* failed
    const unreachable = (e: { readonly _tag: string }) =>
      Effect.fail(
        new LlmUnavailable({ message: `fallback ${next} could not be reached (${e._tag})`, attempts: [] })
      )
    const fallback = yield* Effect.either(
      connections(llmConnectionId(tenantId, next)).Complete({ ...payload, fallbacks: rest }).pipe(
        Effect.catchIf(isClusterError, unreachable)
      )
    )
    if (Either.isRight(fallback)) {
      return { ...fallback.right, attempts: [...failed.attempts, ...fallback.right.attempts] }
    }
    const f = fallback.left
    if (LlmNotConfigured.is(f) || Unavailable.is(f) || f._tag === "BudgetExhausted") {
      return yield* f
    }
    const attempts = [...failed.attempts, ...f.attempts]
    return yield* (LlmUnavailable.is(f)
      ? new LlmUnavailable({ message: f.message, attempts })
      : new LlmBadResponse({ message: f.message, attempts }))
  },
  storeUnavailable,
  (effect, { audit, provider, tenantId }, payload) =>
    AuditLog.timed(effect, audit, (exit, latency_ms) => ({
      tenant_id: tenantId,
      action: "llm.call",
      target: provider,
      outcome: Exit.isSuccess(exit) ? "ok" : "failed",
      latency_ms,
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
    })),
  // the answer's token usage (fallbacks' included), per the GenAI conventions
  Effect.tap((completion) =>
    Effect.annotateCurrentSpan({
      "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
      "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
      "altan.llm_id": completion.llm_id
    })
  )
)
