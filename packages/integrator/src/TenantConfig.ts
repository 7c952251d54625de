import type { TenantId } from "@altan/domain/Ids"
import { LlmConfig } from "@altan/domain/LlmConfig"
import { emptySettings, Settings } from "@altan/domain/Settings"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redis from "./Redis.js"

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

/** Options of `layerRedis`. */
export interface RedisOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://...` for TLS. */
  readonly url: string
  /** First segment of every key, so deployments (or test runs) can share a Redis. Default `altan`. */
  readonly prefix?: string
  /**
   * How long this process serves a read from memory; its own writes are visible at once, another runner's
   * within this time. Zero disables the cache. Default 2 seconds.
   */
  readonly cacheTtl?: Duration.DurationInput
}

/**
 * Configuration in Redis, shared by every runner:
 *
 * - `<prefix>:t:<tenant>:llms` hash, `llm_id` -> `LlmConfig` JSON
 * - `<prefix>:t:<tenant>:settings` string, `Settings` JSON (absent: `emptySettings`)
 *
 * Reads go through a per-process cache of `cacheTtl` (see `RedisOptions`). A stored value that does not decode
 * is a defect naming its key, never a default; so is a Redis failure (the interface has no error channel).
 */
export const layerRedis = (options: RedisOptions): Layer.Layer<TenantConfig, Redis.RedisError> =>
  Layer.scoped(
    TenantConfig,
    Effect.gen(function*() {
      const prefix = yield* Redis.checkPrefix(options.prefix ?? "altan")
      const client = yield* Redis.connect(options.url, "tenant config")
      const cache = { cacheTtl: options.cacheTtl }
      const llms = Redis.makeJsonHash(client, LlmConfig, { ...cache, what: "LlmConfig" })
      const settings = Redis.makeJsonString(client, Settings, { ...cache, what: "Settings" })
      const llmsKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:llms`
      const settingsKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:settings`
      const span = (name: string, tenantId: TenantId) =>
        Effect.withSpan(`TenantConfig.${name}`, {
          attributes: { "altan.tenant_id": tenantId },
          captureStackTrace: false
        })
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
    })
  )
