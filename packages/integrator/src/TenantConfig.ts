import type { TenantId } from "@altan/domain/Ids"
import { LlmConfig } from "@altan/domain/LlmConfig"
import { emptySettings, Settings } from "@altan/domain/Settings"
import type { Redis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as KeyedStore from "./internal/KeyedStore.js"

/** A tenant's configuration: its LLMs and settings. Every read and write is scoped by tenant. */
export class TenantConfig extends Context.Tag("@altan/integrator/TenantConfig")<TenantConfig, {
  readonly getLlm: (tenantId: TenantId, llmId: string) => Effect.Effect<Option.Option<LlmConfig>>
  readonly listLlms: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<LlmConfig>>
  readonly putLlm: (tenantId: TenantId, config: LlmConfig) => Effect.Effect<void>
  readonly deleteLlm: (tenantId: TenantId, llmId: string) => Effect.Effect<boolean>
  readonly getSettings: (tenantId: TenantId) => Effect.Effect<Settings>
  readonly putSettings: (tenantId: TenantId, settings: Settings) => Effect.Effect<void>
}>() {}

const make = (store: KeyedStore.KeyedStore): TenantConfig["Type"] => {
  const llms = store.hash(LlmConfig, "LlmConfig")
  const settings = store.value(Settings, "Settings")
  const llmsKey = (tenantId: TenantId) => store.tenantKey(tenantId, "llms")
  const settingsKey = (tenantId: TenantId) => store.tenantKey(tenantId, "settings")
  const span = (name: string, tenantId: TenantId) => store.span(`TenantConfig.${name}`, { "altan.tenant_id": tenantId })
  return TenantConfig.of({
    getLlm: (tenantId, llmId) => llms.get(llmsKey(tenantId), llmId).pipe(span("getLlm", tenantId)),
    listLlms: (tenantId) =>
      llms.entries(llmsKey(tenantId)).pipe(
        Effect.map((entries) => entries.map(([, config]) => config)),
        span("listLlms", tenantId)
      ),
    putLlm: (tenantId, config) => llms.set(llmsKey(tenantId), config.llm_id, config).pipe(span("putLlm", tenantId)),
    deleteLlm: (tenantId, llmId) => llms.delete(llmsKey(tenantId), llmId).pipe(span("deleteLlm", tenantId)),
    getSettings: (tenantId) =>
      settings.get(settingsKey(tenantId)).pipe(
        Effect.map(Option.getOrElse(() => emptySettings)),
        span("getSettings", tenantId)
      ),
    putSettings: (tenantId, value) => settings.set(settingsKey(tenantId), value).pipe(span("putSettings", tenantId))
  })
}

/**
 * `config` with LLMs the operator offers every tenant beside its own (the demo model of `DEMO_LLM`): read and listed
 * like the tenant's own, never stored, and a tenant's own LLM of the same id wins. `defaultLlm` is the `default_llm`
 * of its `tenants` while their settings name none.
 */
export const withOperatorLlms = (
  config: TenantConfig["Type"],
  offer: {
    readonly llms: ReadonlyArray<LlmConfig>
    readonly defaultLlm?: { readonly llmId: string; readonly tenants: ReadonlyArray<string> } | undefined
  }
): TenantConfig["Type"] =>
  TenantConfig.of({
    ...config,
    getLlm: (tenantId, llmId) =>
      Effect.map(
        config.getLlm(tenantId, llmId),
        Option.orElse(() => Option.fromNullable(offer.llms.find((llm) => llm.llm_id === llmId)))
      ),
    listLlms: (tenantId) =>
      Effect.map(config.listLlms(tenantId), (own) => [
        ...own,
        ...offer.llms.filter((llm) => !own.some((o) => o.llm_id === llm.llm_id))
      ]),
    getSettings: (tenantId) =>
      Effect.map(config.getSettings(tenantId), (settings) =>
        offer.defaultLlm !== undefined && settings.default_llm === undefined &&
          offer.defaultLlm.tenants.includes(tenantId)
          ? { ...settings, default_llm: offer.defaultLlm.llmId }
          : settings)
  })

/** In-process configuration: the embedded default and tests. */
export const layerMemory: Layer.Layer<TenantConfig> = Layer.sync(TenantConfig, () => make(KeyedStore.memory()))

/** Options of `layerRedis`. */
export type RedisOptions = KeyedStore.RedisOptions

/**
 * Configuration in the process's Redis, shared by every runner:
 *
 * - `<prefix>:t:<tenant>:llms` hash, `llm_id` -> `LlmConfig` JSON
 * - `<prefix>:t:<tenant>:settings` string, `Settings` JSON (absent: `emptySettings`)
 *
 * Reads go through a per-process cache of `cacheTtl` (see `RedisOptions`). A stored value that does not decode
 * is a defect naming its key, never a default; so is a Redis failure (the interface has no error channel).
 */
export const layerRedis = (options?: RedisOptions): Layer.Layer<TenantConfig, never, Redis> =>
  Layer.effect(TenantConfig, Effect.map(KeyedStore.redis(options), make))
