import { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import type { TenantId } from "@altan/domain/Ids"
import type { Redis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as KeyedStore from "./internal/KeyedStore.js"

/** A tenant's connection to a provider, as configured; credentials themselves stay in the `SecretStore`. */
export class ConnectionStore extends Context.Tag("@altan/integrator/ConnectionStore")<ConnectionStore, {
  readonly get: (tenantId: TenantId, provider: string) => Effect.Effect<Option.Option<ConnectionConfig>>
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<readonly [string, ConnectionConfig]>>
  readonly put: (tenantId: TenantId, provider: string, config: ConnectionConfig) => Effect.Effect<void>
  readonly remove: (tenantId: TenantId, provider: string) => Effect.Effect<boolean>
}>() {}

const make = (store: KeyedStore.KeyedStore): ConnectionStore["Type"] => {
  const connections = store.hash(ConnectionConfig, "ConnectionConfig")
  const key = (tenantId: TenantId) => store.tenantKey(tenantId, "connections")
  const span = (name: string, tenantId: TenantId, provider?: string) =>
    store.span(
      `ConnectionStore.${name}`,
      provider === undefined
        ? { "altan.tenant_id": tenantId }
        : { "altan.tenant_id": tenantId, "altan.provider": provider }
    )
  return ConnectionStore.of({
    get: (tenantId, provider) => connections.get(key(tenantId), provider).pipe(span("get", tenantId, provider)),
    list: (tenantId) => connections.entries(key(tenantId)).pipe(span("list", tenantId)),
    put: (tenantId, provider, config) =>
      connections.set(key(tenantId), provider, config).pipe(span("put", tenantId, provider)),
    remove: (tenantId, provider) => connections.delete(key(tenantId), provider).pipe(span("remove", tenantId, provider))
  })
}

/** In-process connections: the embedded default and tests. */
export const layerMemory: Layer.Layer<ConnectionStore> = Layer.sync(ConnectionStore, () => make(KeyedStore.memory()))

/** Options of `layerRedis`. */
export type RedisOptions = KeyedStore.RedisOptions

/**
 * Connections in the process's Redis, shared by every runner: `<prefix>:t:<tenant>:connections`, a hash of
 * provider -> `ConnectionConfig` JSON. Each value is the schema's encoded JSON, so a field added to the schema
 * (optional, or with a default) needs no migration, and runners still on the older schema ignore it.
 *
 * Reads go through a per-process cache of `cacheTtl` (see `RedisOptions`). A stored value that does not decode
 * is a defect naming its key and provider, never an absent connection; so is a Redis failure (the interface
 * has no error channel).
 */
export const layerRedis = (options?: RedisOptions): Layer.Layer<ConnectionStore, never, Redis> =>
  Layer.effect(ConnectionStore, Effect.map(KeyedStore.redis(options), make))
