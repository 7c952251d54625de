import type { TenantId } from "@altan/domain/Ids"
import { attempt, checkPrefix, Redis } from "@altan/redis/Redis"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { Redis as IORedis } from "ioredis"
import { makeReadCache } from "./ReadCache.js"

/**
 * The storage under the integrator's configuration stores (`TenantConfig`, `ConnectionStore`): JSON values by
 * key, in process memory or in Redis. The stores have no error channel: in Redis, a failed command or a value that
 * does not decode is a defect.
 */
export interface KeyedStore {
  /** The key of one of a tenant's collections, `<prefix>:t:<tenant>:<name>`. */
  readonly tenantKey: (tenantId: TenantId, name: string) => string
  /** Hashes of `schema` values, by key and field (in Redis, one hash per key). */
  readonly hash: <A, I>(schema: Schema.Schema<A, I>, what: string) => JsonHash<A>
  /** One `schema` value per key (in Redis, a string). */
  readonly value: <A, I>(schema: Schema.Schema<A, I>, what: string) => JsonValue<A>
  /** A span for a store method; memory stores record none. */
  readonly span: (
    name: string,
    attributes: Record<string, string>
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export interface JsonHash<A> {
  readonly get: (key: string, field: string) => Effect.Effect<Option.Option<A>>
  /** Every field and value of the hash: by field name in Redis, in insertion order in memory. */
  readonly entries: (key: string) => Effect.Effect<ReadonlyArray<readonly [string, A]>>
  readonly set: (key: string, field: string, value: A) => Effect.Effect<void>
  /** `false` when the field was not there. */
  readonly delete: (key: string, field: string) => Effect.Effect<boolean>
}

export interface JsonValue<A> {
  readonly get: (key: string) => Effect.Effect<Option.Option<A>>
  readonly set: (key: string, value: A) => Effect.Effect<void>
}

/** Options of the stores' `layerRedis`. */
export interface RedisOptions {
  /** First segment of every key, so deployments (or test runs) can share a Redis. Default `altan`. */
  readonly prefix?: string
  /**
   * How long this process serves a read from memory; its own writes are visible at once, another runner's
   * within this time. Zero disables the cache. Default 2 seconds.
   */
  readonly cacheTtl?: Duration.DurationInput
}

const tenantKey = (prefix: string) => (tenantId: TenantId, name: string) => `${prefix}:t:${tenantId}:${name}`

/** In-process storage: the embedded default and tests. */
export const memory = (): KeyedStore => ({
  tenantKey: tenantKey("altan"),
  hash: memoryHash,
  value: memoryValue,
  span: () => (self) => self
})

const memoryHash = <A>(): JsonHash<A> => {
  const hashes = new Map<string, Map<string, A>>()
  return {
    get: (key, field) => Effect.sync(() => Option.fromNullable(hashes.get(key)?.get(field))),
    entries: (key) => Effect.sync(() => [...(hashes.get(key)?.entries() ?? [])]),
    set: (key, field, value) =>
      Effect.sync(() => {
        const hash = hashes.get(key) ?? new Map<string, A>()
        hashes.set(key, hash.set(field, value))
      }),
    delete: (key, field) => Effect.sync(() => hashes.get(key)?.delete(field) ?? false)
  }
}

const memoryValue = <A>(): JsonValue<A> => {
  const values = new Map<string, A>()
  return {
    get: (key) => Effect.sync(() => Option.fromNullable(values.get(key))),
    set: (key, value) => Effect.sync(() => void values.set(key, value))
  }
}

/**
 * Storage in the process's Redis; reads go through a per-process cache of `cacheTtl` (see `RedisOptions`). Each
 * value is the schema's encoded JSON: extra fields an older schema does not know are ignored on read, so new
 * optional fields roll out without a migration.
 */
export const redis = (options?: RedisOptions): Effect.Effect<KeyedStore, never, Redis> =>
  Effect.gen(function*() {
    const prefix = yield* checkPrefix(options?.prefix ?? "altan")
    const { client } = yield* Redis
    const cacheTtl = options?.cacheTtl ?? defaultCacheTtl
    return {
      tenantKey: tenantKey(prefix),
      hash: (schema, what) => redisHash(client, schema, { cacheTtl, what }),
      value: (schema, what) => redisValue(client, schema, { cacheTtl, what }),
      span: (name, attributes) => Effect.withSpan(name, { attributes, captureStackTrace: false })
    }
  })

/** Runs a command; a transport failure is a defect naming the command and key (the stores have no error channel). */
const command = <A>(operation: string, key: string, f: () => Promise<A>): Effect.Effect<A> =>
  Effect.orDie(attempt(`${operation} ${key}`, f))

/** Default of `cacheTtl`. */
const defaultCacheTtl: Duration.Duration = Duration.seconds(2)

/** Decodes a stored JSON value; one that does not decode is a defect naming where it is, never a default. */
const decoder = <A, I>(schema: Schema.Schema<A, I>, what: string) => {
  const decode = Schema.decodeEither(Schema.parseJson(schema))
  return (where: string, json: string): A => {
    const result = decode(json)
    if (result._tag === "Right") return result.right
    throw new Error(
      `${what} at redis ${where} does not decode (refusing to treat it as absent): ${result.left.message}`
    )
  }
}

const encoder = <A, I>(schema: Schema.Schema<A, I>, what: string) => {
  const encode = Schema.encodeEither(Schema.parseJson(schema))
  return (where: string, value: A): Effect.Effect<string> => {
    const result = encode(value)
    return result._tag === "Right"
      ? Effect.succeed(result.right)
      : Effect.dieMessage(`${what} for redis ${where} does not encode: ${result.left.message}`)
  }
}

interface CacheOptions {
  readonly cacheTtl: Duration.DurationInput
  readonly what: string
}

/**
 * With the cache on, a read loads the whole hash (`HGETALL`) and serves `get` and `entries` of that key from it
 * for `cacheTtl`; values are decoded once per load, on first use, so a corrupted field fails only its readers.
 */
const redisHash = <A, I>(client: IORedis, schema: Schema.Schema<A, I>, options: CacheOptions): JsonHash<A> => {
  const decode = decoder(schema, options.what)
  const encode = encoder(schema, options.what)
  const cache = makeReadCache<Snapshot<A>>(options.cacheTtl)
  const snapshot = (key: string, raw: Record<string, string>): Snapshot<A> => {
    const decoded = new Map<string, A>()
    return {
      fields: Object.keys(raw).sort(),
      value: (field) => {
        // own fields only: a provider named `constructor` must not find `Object.prototype.constructor`
        if (!Object.hasOwn(raw, field)) return Option.none()
        if (!decoded.has(field)) decoded.set(field, decode(`key ${key} field ${field}`, raw[field]!))
        return Option.some(decoded.get(field)!)
      }
    }
  }
  const load = (key: string) =>
    cache.read(key, Effect.map(command("HGETALL", key, () => client.hgetall(key)), (raw) => snapshot(key, raw)))
  return {
    get: (key, field) =>
      cache.enabled
        ? Effect.flatMap(load(key), (s) => Effect.sync(() => s.value(field)))
        : Effect.flatMap(
          command("HGET", key, () => client.hget(key, field)),
          (json) =>
            Effect.sync(() => Option.map(Option.fromNullable(json), (j) => decode(`key ${key} field ${field}`, j)))
        ),
    entries: (key) =>
      Effect.flatMap(
        load(key),
        (s) => Effect.sync(() => s.fields.map((f) => [f, Option.getOrThrow(s.value(f))] as const))
      ),
    set: (key, field, value) =>
      encode(`key ${key} field ${field}`, value).pipe(
        Effect.flatMap((json) => cache.write(key, command("HSET", key, () => client.hset(key, field, json)))),
        Effect.asVoid
      ),
    delete: (key, field) =>
      cache.write(key, command("HDEL", key, () => client.hdel(key, field))).pipe(Effect.map((n) => n > 0))
  }
}

interface Snapshot<A> {
  readonly fields: ReadonlyArray<string>
  /** Throws (a defect once inside `Effect.sync`) when the stored value does not decode. */
  readonly value: (field: string) => Option.Option<A>
}

/** With the cache on, an absent key is cached too: reading settings a tenant never wrote costs no round trip. */
const redisValue = <A, I>(client: IORedis, schema: Schema.Schema<A, I>, options: CacheOptions): JsonValue<A> => {
  const decode = decoder(schema, options.what)
  const encode = encoder(schema, options.what)
  const cache = makeReadCache<Option.Option<A>>(options.cacheTtl)
  return {
    get: (key) =>
      cache.read(
        key,
        Effect.flatMap(
          command("GET", key, () => client.get(key)),
          (json) => Effect.sync(() => Option.map(Option.fromNullable(json), (j) => decode(`key ${key}`, j)))
        )
      ),
    set: (key, value) =>
      encode(`key ${key}`, value).pipe(
        Effect.flatMap((json) => cache.write(key, command("SET", key, () => client.set(key, json)))),
        Effect.asVoid
      )
  }
}
