import { Api } from "@altan/domain/Api"
import { InvalidRequest, NotFound, Unavailable } from "@altan/domain/Errors"
import { CurrentPrincipal } from "@altan/domain/Principal"
import { TenantTasks } from "@altan/domain/TenantTasks"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { ConnectionStore } from "./ConnectionStore.js"
import { requireAdmin } from "./internal/requireAdmin.js"
import { notifyBudgetsChanged, notifyConnectionReady } from "./internal/wakeTasks.js"
import { SecretStore, type SecretStoreError } from "./SecretStore.js"
import { storeUnavailable } from "./StoreUnavailable.js"
import { TenantConfig } from "./TenantConfig.js"
import * as UsageMeter from "./UsageMeter.js"

/** `/v1/llms`: the tenant's LLM configurations. Admin only. */
export const LlmsLive = HttpApiBuilder.group(Api, "llms", (handlers) =>
  Effect.gen(function*() {
    const config = yield* TenantConfig
    const notFound = (llmId: string) => new NotFound({ message: `no LLM "${llmId}"` })
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (payload.llm_id !== path.llm_id) {
            return yield* new InvalidRequest({
              message: `the body's llm_id "${payload.llm_id}" differs from the path's "${path.llm_id}"`,
              details: { field: "llm_id" }
            })
          }
          yield* config.putLlm(tenantId, payload)
          return payload
        }))
      .handle("get", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          return yield* Effect.flatMap(
            config.getLlm(tenantId, path.llm_id),
            Option.match({
              onNone: () => Effect.fail(notFound(path.llm_id)),
              onSome: Effect.succeed
            })
          )
        }))
      .handle("list", () => Effect.flatMap(requireAdmin, ({ tenantId }) => config.listLlms(tenantId)))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* config.deleteLlm(tenantId, path.llm_id))) return yield* notFound(path.llm_id)
        }))
  }))

/** `/v1/settings`: default and fallback LLMs, egress allowlist, provider base URLs. Admin only. */
export const SettingsLive = HttpApiBuilder.group(Api, "settings", (handlers) =>
  Effect.gen(function*() {
    const config = yield* TenantConfig
    const tenantTasks = yield* TenantTasks.client
    return handlers
      .handle("put", ({ payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          for (
            const [field, id] of [
              ["default_llm", payload.default_llm],
              ...payload.fallback_llms.map((id, i) => [`fallback_llms.${i}`, id] as const)
            ] as const
          ) {
            if (id !== undefined && Option.isNone(yield* config.getLlm(tenantId, id))) {
              return yield* new InvalidRequest({
                code: "unknown_llm",
                message: `no LLM "${id}" is configured`,
                details: { field }
              })
            }
          }
          const previous = yield* config.getSettings(tenantId)
          yield* config.putSettings(tenantId, payload)
          // budgets raised or removed: the tasks waiting for a spent one look again
          if (payload.budgets !== undefined || previous.budgets !== undefined) {
            yield* notifyBudgetsChanged(tenantTasks, tenantId)
          }
          return payload
        }))
      .handle("get", () => Effect.flatMap(requireAdmin, ({ tenantId }) => config.getSettings(tenantId)))
  }))

/** `/v1/usage`: the tenant's spend this day and month, per budget, beside its limits. Any role of the tenant. */
export const UsageLive = HttpApiBuilder.group(Api, "usage", (handlers) =>
  Effect.gen(function*() {
    const config = yield* TenantConfig
    const meter = yield* UsageMeter.UsageMeter
    return handlers.handle("get", () =>
      Effect.gen(function*() {
        const { tenantId } = yield* CurrentPrincipal
        const settings = yield* config.getSettings(tenantId)
        return { usage: yield* UsageMeter.report(meter, tenantId, settings.budgets) }
      }).pipe(storeUnavailable))
  }))

const secretsUnavailable = (e: SecretStoreError) => new Unavailable({ message: e.message })

/** `/v1/secrets`: write-only secrets. Admin only. */
export const SecretsLive = HttpApiBuilder.group(Api, "secrets", (handlers) =>
  Effect.gen(function*() {
    const secrets = yield* SecretStore
    const connections = yield* ConnectionStore
    const tenantTasks = yield* TenantTasks.client
    return handlers
      .handle("put", ({ path, payload }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          yield* secrets.put(tenantId, path.name, Redacted.make(payload.value)).pipe(
            Effect.mapError(secretsUnavailable)
          )
          // the key of an API-key connection is stored: the tasks waiting for that connection go on
          for (const [provider, c] of yield* connections.list(tenantId)) {
            if (c.type === "api_key" && c.secret === path.name) {
              yield* notifyConnectionReady(tenantTasks, tenantId, provider)
            }
          }
        }))
      .handle("delete", ({ path }) =>
        Effect.gen(function*() {
          const { tenantId } = yield* requireAdmin
          if (!(yield* secrets.delete(tenantId, path.name).pipe(Effect.mapError(secretsUnavailable)))) {
            return yield* new NotFound({ message: `no secret "${path.name}"` })
          }
        }))
  }))
