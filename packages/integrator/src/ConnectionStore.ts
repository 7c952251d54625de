import type { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import type { TenantId } from "@altan/domain/Ids"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

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
