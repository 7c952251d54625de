import type { TenantId } from "@altan/domain/Ids"
import type { LlmConfig } from "@altan/domain/LlmConfig"
import { emptySettings, type Settings } from "@altan/domain/Settings"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/** A tenant's configuration: its LLMs and settings. Every read and write is scoped by tenant. */
export class TenantConfig extends Context.Tag("@altan/integrator/TenantConfig")<TenantConfig, {
  readonly getLlm: (tenantId: TenantId, llmId: string) => Effect.Effect<Option.Option<LlmConfig>>
  readonly listLlms: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<LlmConfig>>
  readonly putLlm: (tenantId: TenantId, config: LlmConfig) => Effect.Effect<void>
  readonly deleteLlm: (tenantId: TenantId, llmId: string) => Effect.Effect<boolean>
  readonly getSettings: (tenantId: TenantId) => Effect.Effect<Settings>
  readonly putSettings: (tenantId: TenantId, settings: Settings) => Effect.Effect<void>
}>() {}

/** In-process configuration: the embedded default and tests. */
export const layerMemory: Layer.Layer<TenantConfig> = Layer.sync(TenantConfig, () => {
  const llms = new Map<TenantId, Map<string, LlmConfig>>()
  const settings = new Map<TenantId, Settings>()
  const of = (tenantId: TenantId) => {
    let m = llms.get(tenantId)
    if (!m) llms.set(tenantId, m = new Map())
    return m
  }
  return {
    getLlm: (tenantId, llmId) => Effect.sync(() => Option.fromNullable(llms.get(tenantId)?.get(llmId))),
    listLlms: (tenantId) => Effect.sync(() => [...(llms.get(tenantId)?.values() ?? [])]),
    putLlm: (tenantId, config) => Effect.sync(() => void of(tenantId).set(config.llm_id, config)),
    deleteLlm: (tenantId, llmId) => Effect.sync(() => llms.get(tenantId)?.delete(llmId) ?? false),
    getSettings: (tenantId) => Effect.sync(() => settings.get(tenantId) ?? emptySettings),
    putSettings: (tenantId, value) => Effect.sync(() => void settings.set(tenantId, value))
  }
})
