import type { TenantId } from "@altan/domain/Ids"
import { isReservedSecretName } from "@altan/domain/Secret"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Redacted from "effect/Redacted"
import { makeReadCache } from "./internal/ReadCache.js"

/**
 * The secret store could not answer (a backend down, a ciphertext that does not decrypt). Reads fail
 * closed with this; the message never carries a secret value.
 */
export class SecretStoreError extends Data.TaggedError("SecretStoreError")<{
  readonly message: string
  readonly cause?: unknown
}> {
  static is(u: unknown): u is SecretStoreError {
    return Predicate.isTagged(u, "SecretStoreError")
  }
}

/**
 * A tenant's secrets (API keys, client secrets, tokens), by name. Values stay `Redacted` end to end,
 * so they print as `<redacted>` in logs, traces and errors.
 */
export class SecretStore extends Context.Tag("@altan/integrator/SecretStore")<SecretStore, {
  readonly get: (tenantId: TenantId, name: string) => Effect.Effect<Option.Option<Redacted.Redacted>, SecretStoreError>
  readonly put: (tenantId: TenantId, name: string, value: Redacted.Redacted) => Effect.Effect<void, SecretStoreError>
  readonly delete: (tenantId: TenantId, name: string) => Effect.Effect<boolean, SecretStoreError>
}>() {}

/** In-process secrets: the embedded default and tests. */
export const layerMemory: Layer.Layer<SecretStore> = Layer.sync(SecretStore, () => {
  const secrets = new Map<string, Redacted.Redacted>()
  const key = (tenantId: TenantId, name: string) => `${tenantId}\u0000${name}`
  return {
    get: (tenantId, name) => Effect.sync(() => Option.fromNullable(secrets.get(key(tenantId, name)))),
    put: (tenantId, name, value) => Effect.sync(() => void secrets.set(key(tenantId, name), value)),
    delete: (tenantId, name) => Effect.sync(() => secrets.delete(key(tenantId, name)))
  }
})

/**
 * A backend's store with spans named after the service method, carrying the tenant and the secret's name, never
 * its value.
 */
export const traced = (backend: string, store: SecretStore["Type"]): SecretStore["Type"] => {
  const options = { attributes: { "altan.secret_backend": backend }, captureStackTrace: false }
  const annotated = <A, E, R>(effect: Effect.Effect<A, E, R>, tenantId: TenantId, name: string) =>
    Effect.zipRight(Effect.annotateCurrentSpan({ "altan.tenant_id": tenantId, "altan.secret_name": name }), effect)
  return {
    get: Effect.fn("SecretStore.get", options)((tenantId, name) => store.get(tenantId, name), annotated),
    put: Effect.fn("SecretStore.put", options)((tenantId, name, value) => store.put(tenantId, name, value), annotated),
    delete: Effect.fn("SecretStore.delete", options)((tenantId, name) => store.delete(tenantId, name), annotated)
  }
}

/** Options of `withCache`. */
export interface CacheOptions {
  /** Most entries kept; past it, expired ones go first, then the oldest. 10 000 by default. */
  readonly capacity?: number
}

/**
 * A per-process cache in front of a store: answers (found and not found) are kept `ttl`; this process's own
 * `put` and `delete` drop the entry at once, other processes' writes show after at most `ttl`. Failures are
 * never cached. A zero `ttl` leaves the store as it is.
 */
export const withCache =
  (ttl: Duration.DurationInput, options?: CacheOptions) =>
  <E, R>(self: Layer.Layer<SecretStore, E, R>): Layer.Layer<SecretStore, E, R> => {
    if (!(Duration.toMillis(ttl) > 0)) return self
    return Layer.effect(
      SecretStore,
      Effect.map(SecretStore, (store): SecretStore["Type"] => {
        const cache = makeReadCache<Option.Option<Redacted.Redacted>>(ttl, options?.capacity)
        const keyOf = (tenantId: TenantId, name: string) => `${tenantId}\u0000${name}`
        return {
          // the runtime's own entries (OAuth2 tokens, rotated by their actor, which may move between
          // runners) are always read fresh: a stale refresh token would cost the connection its grant
          get: (tenantId, name) =>
            isReservedSecretName(name)
              ? store.get(tenantId, name)
              : cache.read(keyOf(tenantId, name), store.get(tenantId, name)),
          put: (tenantId, name, value) => cache.write(keyOf(tenantId, name), store.put(tenantId, name, value)),
          delete: (tenantId, name) => cache.write(keyOf(tenantId, name), store.delete(tenantId, name))
        }
      })
    ).pipe(Layer.provide(self))
  }
