import type { Redis } from "@altan/redis/Redis"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { layerMemory, type SecretStore, type SecretStoreError, withCache } from "./SecretStore.js"
import * as SecretStoreGcp from "./SecretStoreGcp.js"
import * as SecretStoreRedis from "./SecretStoreRedis.js"

/** Where tenant secrets live, as configured by the environment (`loadConfig`). */
export type SecretStoreConfig =
  /** `SECRETS_BACKEND=memory` (the default): process memory, lost on restart, not shared between runners. */
  | { readonly backend: "memory" }
  /** `SECRETS_BACKEND=redis`: envelope-encrypted in the `REDIS_URL` Redis; needs `SECRETS_MASTER_KEY`. */
  | {
    readonly backend: "redis"
    readonly masterKeys: SecretStoreRedis.MasterKeyRing
    readonly cacheTtl: Duration.Duration
  }
  /** `SECRETS_BACKEND=gcp`: Google Secret Manager of `GCP_PROJECT` (or `GOOGLE_CLOUD_PROJECT`). */
  | { readonly backend: "gcp"; readonly projectId: string; readonly cacheTtl: Duration.Duration }

export const defaults = {
  /** Memory unless chosen explicitly: a Redis or GCP store needs keys or credentials an operator provides. */
  backend: "memory",
  cacheTtl: Duration.seconds(30)
} as const

const cacheTtlConfig = Config.duration("SECRETS_CACHE_TTL").pipe(
  Config.withDefault(defaults.cacheTtl),
  Config.withDescription("How long a process caches secrets read from redis or gcp, e.g. `30 seconds`; 0 disables.")
)

const backendConfig = Config.literal("memory", "redis", "gcp")("SECRETS_BACKEND").pipe(
  Config.withDefault(defaults.backend),
  Config.withDescription("Where tenant secrets live: memory (default), redis (needs REDIS_URL) or gcp.")
)

const gcpProjectConfig = Config.nonEmptyString("GCP_PROJECT").pipe(
  Config.orElse(() => Config.nonEmptyString("GOOGLE_CLOUD_PROJECT")),
  Config.withDescription("Google Cloud project of the Secret Manager secrets (GCP_PROJECT or GOOGLE_CLOUD_PROJECT).")
)

/**
 * Reads `SECRETS_BACKEND` and what the chosen backend needs: `SECRETS_MASTER_KEY` /
 * `SECRETS_MASTER_KEYS_PREVIOUS` for redis, `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT` for gcp, and
 * `SECRETS_CACHE_TTL` for both.
 */
export const loadConfig: Effect.Effect<SecretStoreConfig, ConfigError.ConfigError> = Effect.gen(function*() {
  const backend = yield* backendConfig
  switch (backend) {
    case "memory":
      return { backend }
    case "redis":
      return { backend, masterKeys: yield* SecretStoreRedis.masterKeysConfig, cacheTtl: yield* cacheTtlConfig }
    case "gcp":
      return { backend, projectId: yield* gcpProjectConfig, cacheTtl: yield* cacheTtlConfig }
  }
})

/**
 * The `SecretStore` the environment asks for (`loadConfig`); `redis` is the process's Redis when `REDIS_URL` is
 * set, which the redis backend requires. Remote stores come with `withCache(SECRETS_CACHE_TTL)`.
 */
export const layerFromConfig = <E = never, R = never>(
  redis: Option.Option<Layer.Layer<Redis, E, R>>
): Layer.Layer<SecretStore, ConfigError.ConfigError | SecretStoreError | E, R> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const config = yield* loadConfig
    switch (config.backend) {
      case "memory": {
        if (Option.isSome(redis)) {
          yield* Effect.logWarning(
            "tenant secrets are kept in process memory (SECRETS_BACKEND=memory): they are lost on restart and not " +
              "shared between runners; set SECRETS_BACKEND=redis and SECRETS_MASTER_KEY"
          )
        }
        return layerMemory
      }
      case "redis": {
        if (Option.isNone(redis)) {
          return yield* Effect.fail(ConfigError.MissingData(["REDIS_URL"], "SECRETS_BACKEND=redis needs REDIS_URL"))
        }
        yield* Effect.logInfo(
          `tenant secrets in redis, data keys wrapped by master key "${config.masterKeys.current.id}"` +
            (config.masterKeys.previous.length > 0
              ? ` (also unwrapping with ${config.masterKeys.previous.map((k) => `"${k.id}"`).join(", ")})`
              : "")
        )
        return SecretStoreRedis.layer({ masterKeys: config.masterKeys }).pipe(
          Layer.provide(redis.value),
          withCache(config.cacheTtl)
        )
      }
      case "gcp": {
        yield* Effect.logInfo(`tenant secrets in google secret manager, project ${config.projectId}`)
        return SecretStoreGcp.layer({ projectId: config.projectId }).pipe(withCache(config.cacheTtl))
      }
    }
  }))
