import { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import type { TenantId } from "@altan/domain/Ids"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redis from "./Redis.js"

/** A tenant's connection to a provider, as configured; credentials themselves stay in the `SecretStore`. */
export class ConnectionStore extends Context.Tag("@altan/integrator/ConnectionStore")<ConnectionStore, {
  readonly get: (tenantId: TenantId, provider: string) => Effect.Effect<Option.Option<ConnectionConfig>>
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<readonly [string, ConnectionConfig]>>
  readonly put: (tenantId: TenantId, provider: string, config: ConnectionConfig) => Effect.Effect<void>
  readonly remove: (tenantId: TenantId, provider: string) => Effect.Effect<boolean>
}>() {}

/** In-process connections: the embedded default and tests. */
export const layerMemory: Layer.Layer<ConnectionStore> = Layer.sync(ConnectionStore, () => {
  const connections = new Map<TenantId, Map<string, ConnectionConfig>>()
  return {
    get: (tenantId, provider) => Effect.sync(() => Option.fromNullable(connections.get(tenantId)?.get(provider))),
    list: (tenantId) => Effect.sync(() => [...(connections.get(tenantId)?.entries() ?? [])]),
    put: (tenantId, provider, config) =>
      Effect.sync(() => {
        const m = connections.get(tenantId) ?? new Map<string, ConnectionConfig>()
        connections.set(tenantId, m.set(provider, config))
      }),
    remove: (tenantId, provider) => Effect.sync(() => connections.get(tenantId)?.delete(provider) ?? false)
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
 * Connections in Redis, shared by every runner: `<prefix>:t:<tenant>:connections`, a hash of provider ->
 * `ConnectionConfig` JSON. Each value is the schema's encoded JSON, so a field added to the schema (optional, or
 * with a default) needs no migration, and runners still on the older schema ignore it.
 *
 * Reads go through a per-process cache of `cacheTtl` (see `RedisOptions`). A stored value that does not decode
 * is a defect naming its key and provider, never an absent connection; so is a Redis failure (the interface
 * has no error channel).
 */
export const layerRedis = (options: RedisOptions): Layer.Layer<ConnectionStore, Redis.RedisError> =>
  Layer.scoped(
    ConnectionStore,
    Effect.gen(function*() {
      const prefix = yield* Redis.checkPrefix(options.prefix ?? "altan")
      const client = yield* Redis.connect(options.url, "connection store")
      const connections = Redis.makeJsonHash(client, ConnectionConfig, {
        cacheTtl: options.cacheTtl,
        what: "ConnectionConfig"
      })
      const key = (tenantId: TenantId) => `${prefix}:t:${tenantId}:connections`
      const span = (name: string, tenantId: TenantId, provider?: string) =>
        Effect.withSpan(`ConnectionStore.${name}`, {
          attributes: provider === undefined
            ? { "altan.tenant_id": tenantId }
            : { "altan.tenant_id": tenantId, "altan.provider": provider },
          captureStackTrace: false
        })
      return ConnectionStore.of({
        get: (tenantId, provider) => connections.get(key(tenantId), provider).pipe(span("get", tenantId, provider)),
        list: (tenantId) => connections.entries(key(tenantId)).pipe(span("list", tenantId)),
        put: (tenantId, provider, config) =>
          connections.set(key(tenantId), provider, config).pipe(span("put", tenantId, provider)),
        remove: (tenantId, provider) =>
          connections.delete(key(tenantId), provider).pipe(span("remove", tenantId, provider))
      })
    })
  )
