/**
 * `npm run secrets:rewrap`: after a master key rotation (new `SECRETS_MASTER_KEY`, the old one in
 * `SECRETS_MASTER_KEYS_PREVIOUS`), re-wraps every tenant's data key under the new master key. Secrets
 * themselves are not touched; runners keep serving meanwhile.
 */
import * as SecretStoreRedis from "@altan/integrator/SecretStoreRedis"
import * as Redis from "@altan/redis/Redis"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"

Effect.gen(function*() {
  const masterKeys = yield* SecretStoreRedis.masterKeysConfig
  const result = yield* SecretStoreRedis.rewrapDataKeys({ masterKeys })
  yield* Effect.logInfo(
    `data keys re-wrapped under master key ${masterKeys.current.id}: ${result.rewrapped} re-wrapped, ` +
      `${result.unchanged} already current`
  )
}).pipe(Effect.provide(Redis.layerConfig), NodeRuntime.runMain)
