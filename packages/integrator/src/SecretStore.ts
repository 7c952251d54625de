import type { TenantId } from "@altan/domain/Ids"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"

/**
 * The secret store could not answer (a backend down, a ciphertext that does not decrypt). Reads fail
 * closed with this; the message never carries a secret value.
 */
export class SecretStoreError extends Data.TaggedError("SecretStoreError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

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
