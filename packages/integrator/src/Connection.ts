import { Connection, llmProvider } from "@altan/domain/Connection"
import { parseEntityId } from "@altan/domain/Ids"
import { LlmBadResponse, LlmNotConfigured, LlmUnavailable } from "@altan/domain/Llm"
import { type Credential, ToolFailed, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { ConnectionStore } from "./ConnectionStore.js"
import { LlmGateway } from "./LlmGateway.js"
import { SecretStore } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

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
  return Connection.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key: provider, tenantId } = parseEntityId(address.entityId)
      /** The credential of this connection, resolved from its secret for each call (never cached here). */
      const credential = Effect.gen(function*() {
        const connection = yield* connections_.get(tenantId, provider)
        if (Option.isNone(connection) || connection.value.type !== "api_key") return Option.none<Credential>()
        const { header, prefix, secret } = connection.value
        const value = yield* secrets.get(tenantId, secret).pipe(
          Effect.mapError((e) => new ToolFailed({ tool_id: provider, message: e.message, retryable: true }))
        )
        return Option.map(value, (v): Credential => ({ header, value: Redacted.make(prefix + Redacted.value(v)) }))
      })
      return Connection.of({
        Invoke: ({ payload }) => {
          const toolUnavailable = (e: { readonly _tag: string }) =>
            Effect.fail(
              new ToolFailed({
                tool_id: payload.tool_id,
                message: `the tool service could not take the call (${e._tag})`,
                retryable: true
              })
            )
          const call = Effect.flatMap(
            Effect.all([config.getSettings(tenantId), credential]),
            ([settings, cred]) =>
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
                ...(payload.step_id ? { step_id: payload.step_id } : {})
              })
          ).pipe(
            Effect.catchTags({
              MailboxFull: toolUnavailable,
              AlreadyProcessingMessage: toolUnavailable,
              PersistenceError: toolUnavailable
            })
          )
          const tried = [...(payload.tried ?? []), payload.tool_id]
          const fallback = payload.fallback
          return (fallback === undefined || tried.includes(fallback) ? call : call.pipe(
            // the fallback answers only when a retry might have helped; a bad request stays the caller's to fix
            Effect.catchIf((e) => e._tag === "ToolFailed" && e.retryable, (failed) =>
              Effect.gen(function*() {
                const spec = yield* toolWorker(`${tenantId}/${fallback}`).Describe().pipe(
                  Effect.catchAll(() => Effect.fail(failed))
                )
                const result = yield* connections(`${tenantId}/${spec.provider}`).Invoke({
                  ...payload,
                  tool_id: fallback,
                  tried,
                  ...(spec.fallback ? { fallback: spec.fallback } : { fallback: undefined })
                }).pipe(Effect.catchTags({
                  MailboxFull: () => Effect.fail(failed),
                  AlreadyProcessingMessage: () => Effect.fail(failed),
                  PersistenceError: () => Effect.fail(failed)
                }))
                return { ...result, served_by: result.served_by ?? fallback }
              }).pipe(Effect.withSpan("Connection.fallback", { attributes: { "tool.id": fallback } })))
          )).pipe(
            Effect.withSpan("Connection.invoke", {
              attributes: { "tenant.id": tenantId, provider, "tool.id": payload.tool_id },
              captureStackTrace: false
            })
          )
        },

        Complete: ({ payload }) =>
          Effect.gen(function*() {
            if (!provider.startsWith("llm:")) {
              return yield* new LlmNotConfigured({ message: `${provider} is not an LLM connection` })
            }
            const first = yield* Effect.either(gateway.complete(tenantId, provider.slice(4), payload))
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
                Effect.catchTags({
                  MailboxFull: unreachable,
                  AlreadyProcessingMessage: unreachable,
                  PersistenceError: unreachable
                })
              )
            )
            if (Either.isRight(fallback)) {
              return { ...fallback.right, attempts: [...failed.attempts, ...fallback.right.attempts] }
            }
            const f = fallback.left
            if (f._tag === "LlmNotConfigured") {
              return yield* f
            }
            const attempts = [...failed.attempts, ...f.attempts]
            return yield* (f._tag === "LlmUnavailable"
              ? new LlmUnavailable({ message: f.message, attempts })
              : new LlmBadResponse({ message: f.message, attempts }))
          }).pipe(Effect.withSpan("Connection.complete", { attributes: { "tenant.id": tenantId, provider } }))
      })
    }),
    { concurrency: "unbounded", maxIdleTime: "15 minutes" }
  )
}))
