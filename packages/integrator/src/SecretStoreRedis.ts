import { errorMessage } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { Redis } from "@altan/redis/Redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import {
  type DataKey,
  type MasterKeyRing,
  newDataKey,
  open,
  parseSealed,
  seal,
  secretAad,
  unwrapDataKey,
  wrapDataKey
} from "./internal/envelope.js"
import { SecretStore, SecretStoreError, traced } from "./SecretStore.js"

export { makeMasterKeyRing, type MasterKey, type MasterKeyRing, masterKeysConfig } from "./internal/envelope.js"

/** Options of `layer` and `rewrapDataKeys`. */
export interface Options {
  /** Key prefix, `altan` by default: `<prefix>:t:<tenant>:secrets` and `<prefix>:t:<tenant>:dek`. */
  readonly prefix?: string
  readonly masterKeys: MasterKeyRing
}

const redisCommand = <A>(command: string, f: () => Promise<A>): Effect.Effect<A, SecretStoreError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) => new SecretStoreError({ message: `secret store: redis ${command} failed: ${errorMessage(cause)}` })
  })

const redisKeys = (options: Options) => {
  const prefix = options.prefix ?? "altan"
  if (!/^[^\s{}*?[\]\\]+$/.test(prefix)) {
    return Effect.fail(
      new SecretStoreError({
        message: `redis key prefix must be non-empty, without spaces, braces or glob characters: "${prefix}"`
      })
    )
  }
  return Effect.succeed({
    prefix,
    secrets: (tenantId: string) => `${prefix}:t:${tenantId}:secrets`,
    dataKey: (tenantId: string) => `${prefix}:t:${tenantId}:dek`
  })
}

/**
 * Secrets in the process's Redis under envelope encryption. Each tenant has a random 256-bit data key, stored
 * wrapped (AES-256-GCM) by the operator's current master key at `<prefix>:t:<tenant>:dek`; each secret is sealed
 * with it (AES-256-GCM, fresh 96-bit IV, associated data binding tenant and name) into the hash
 * `<prefix>:t:<tenant>:secrets`. Redis never holds a plaintext value or an unwrapped key; a ciphertext
 * moved to another slot, or a master key that does not match, fails closed with `SecretStoreError`.
 */
export const layer = (options: Options): Layer.Layer<SecretStore, SecretStoreError, Redis> =>
  Layer.effect(
    SecretStore,
    Effect.gen(function*() {
      const keys = yield* redisKeys(options)
      const { client } = yield* Redis
      const ring = options.masterKeys
      // Unwrapped data keys of this process; a rewrap changes their wrapping, never the keys themselves.
      const dataKeys = new Map<string, DataKey>()

      const unwrap = (tenantId: TenantId, blob: string) =>
        Effect.tap(unwrapDataKey(ring, tenantId, blob), (dataKey) => Effect.sync(() => dataKeys.set(tenantId, dataKey)))

      const readDataKey = (tenantId: TenantId): Effect.Effect<Option.Option<DataKey>, SecretStoreError> =>
        Effect.suspend(() => {
          const known = dataKeys.get(tenantId)
          if (known) return Effect.succeedSome(known)
          return redisCommand("GET", () => client.get(keys.dataKey(tenantId))).pipe(
            Effect.flatMap((blob) => blob === null ? Effect.succeedNone : Effect.asSome(unwrap(tenantId, blob)))
          )
        })

      /** The tenant's data key, created on first use; `SET NX` makes concurrent creators agree on one. */
      const dataKeyFor = (tenantId: TenantId): Effect.Effect<DataKey, SecretStoreError> =>
        Effect.flatMap(readDataKey(tenantId), (existing) => {
          if (Option.isSome(existing)) return Effect.succeed(existing.value)
          const { bytes, dataKey } = newDataKey()
          const wrapped = wrapDataKey(ring, tenantId, bytes)
          bytes.fill(0)
          return redisCommand("SET", () => client.set(keys.dataKey(tenantId), wrapped, "NX")).pipe(
            Effect.flatMap((set) =>
              set === "OK"
                ? Effect.sync(() => {
                  dataKeys.set(tenantId, dataKey)
                  return dataKey
                })
                : redisCommand("GET", () => client.get(keys.dataKey(tenantId))).pipe(
                  Effect.flatMap((blob) =>
                    blob === null
                      ? new SecretStoreError({ message: `the data key of tenant ${tenantId} vanished while created` })
                      : unwrap(tenantId, blob)
                  )
                )
            )
          )
        })

      const decrypt = (tenantId: TenantId, name: string, blob: string) =>
        Effect.gen(function*() {
          const fail = (reason: string) =>
            new SecretStoreError({ message: `cannot decrypt secret "${name}" of tenant ${tenantId}: ${reason}` })
          const sealed = parseSealed(blob)
          if (Option.isNone(sealed)) return yield* fail("the stored ciphertext is malformed")
          const dataKey = yield* readDataKey(tenantId)
          if (Option.isNone(dataKey)) return yield* fail("the tenant has no data key")
          if (sealed.value.keyId !== dataKey.value.id) {
            return yield* fail(`it was sealed with another data key ("${sealed.value.keyId}")`)
          }
          const plaintext = open(dataKey.value.key, sealed.value, secretAad(tenantId, name))
          if (Option.isNone(plaintext)) {
            return yield* fail("the ciphertext does not authenticate (altered, or moved from another tenant or name)")
          }
          const value = plaintext.value.toString("utf8")
          plaintext.value.fill(0)
          return Redacted.make(value)
        })

      return traced("redis", {
        get: (tenantId, name) =>
          redisCommand("HGET", () => client.hget(keys.secrets(tenantId), name)).pipe(
            Effect.flatMap((blob) => blob === null ? Effect.succeedNone : Effect.asSome(decrypt(tenantId, name, blob)))
          ),
        put: (tenantId, name, value) =>
          Effect.gen(function*() {
            const dataKey = yield* dataKeyFor(tenantId)
            const plaintext = Buffer.from(Redacted.value(value), "utf8")
            const blob = seal(dataKey.key, dataKey.id, plaintext, secretAad(tenantId, name))
            plaintext.fill(0)
            yield* redisCommand("HSET", () => client.hset(keys.secrets(tenantId), name, blob))
          }),
        delete: (tenantId, name) =>
          redisCommand("HDEL", () => client.hdel(keys.secrets(tenantId), name)).pipe(Effect.map((n) => n > 0))
      })
    })
  )

/** What `rewrapDataKeys` did. */
export interface RewrapResult {
  /** Data keys now wrapped by the current master key that were wrapped by an older one. */
  readonly rewrapped: number
  /** Data keys already wrapped by the current master key. */
  readonly unchanged: number
}

// Replaces the wrapped key only if nobody changed it since it was read.
const compareAndSet =
  `if redis.call("GET", KEYS[1]) == ARGV[1] then redis.call("SET", KEYS[1], ARGV[2]) return 1 end return 0`

/**
 * Re-wraps every tenant's data key under the current master key (`masterKeys.current`), unwrapping with
 * any key of the ring. Secret ciphertexts are not touched: after it has run, the previous master keys can
 * be retired. Idempotent and safe to run while runners serve; a data key that no key of the ring unwraps
 * fails it (the ones done so far stay done).
 */
export const rewrapDataKeys: (
  options: Options
) => Effect.Effect<RewrapResult, SecretStoreError, Redis> = Effect.fn("SecretStore.rewrapDataKeys", {
  captureStackTrace: false
})(
  function*(options) {
    yield* Effect.annotateCurrentSpan("altan.master_key_id", options.masterKeys.current.id)
    const keys = yield* redisKeys(options)
    const { client } = yield* Redis
    const ring = options.masterKeys
    const head = `${keys.prefix}:t:`
    let rewrapped = 0
    let unchanged = 0

    const rewrap = (key: string, attempt: number): Effect.Effect<void, SecretStoreError> =>
      Effect.gen(function*() {
        const tenantId = key.slice(head.length, -":dek".length)
        const blob = yield* redisCommand("GET", () => client.get(key))
        if (blob === null) return
        if (Option.exists(parseSealed(blob), (s) => s.keyId === ring.current.id)) {
          unchanged++
          return
        }
        const dataKey = yield* unwrapDataKey(ring, tenantId, blob)
        const bytes = dataKey.key.export()
        const wrapped = wrapDataKey(ring, tenantId, bytes)
        bytes.fill(0)
        const set = yield* redisCommand("EVAL", () => client.eval(compareAndSet, 1, key, blob, wrapped))
        if (set === 1) rewrapped++
        else if (attempt < 3) yield* rewrap(key, attempt + 1)
        else {return yield* new SecretStoreError({
            message: `the data key at ${key} keeps changing; run the rewrap again`
          })}
      })

    let cursor = "0"
    do {
      const [next, found] = yield* redisCommand(
        "SCAN",
        () => client.scan(cursor, "MATCH", `${keys.prefix}:t:*:dek`, "COUNT", 500)
      )
      cursor = next
      // `*` also spans colons: only `<prefix>:t:<tenant>:dek`, never another store's key that happens to end so
      for (const key of found) if (!key.slice(head.length, -":dek".length).includes(":")) yield* rewrap(key, 0)
    } while (cursor !== "0")
    return { rewrapped, unchanged }
  }
)
