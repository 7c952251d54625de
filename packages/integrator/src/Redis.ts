import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"

/** A Redis connection or command failed; `message` never contains credentials. */
export class RedisError extends Data.TaggedError("RedisError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

const errorMessage = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** `scheme://host:port` of a URL, without credentials, for messages. */
const describe = (url: string) => {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}`
  } catch {
    return "<invalid url>"
  }
}

/**
 * An ioredis connection for the scope's lifetime (`QUIT` when it closes). A bad URL or a server that cannot be
 * reached fails here, with a message naming `purpose` and the host, never the password.
 */
export const connect = (url: string, purpose: string): Effect.Effect<IORedis, RedisError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const where = describe(url)
      if (!/^rediss?:\/\//.test(url) || where === "<invalid url>") {
        return yield* new RedisError({
          message: `the redis url for the ${purpose} must be redis://host:port or rediss://..., got ${where}`
        })
      }
      const client = new IORedis(url, {
        lazyConnect: true,
        // fail commands fast while the server is away instead of queueing them for ~20 reconnects
        maxRetriesPerRequest: 2,
        connectTimeout: 5_000,
        connectionName: `altan-${purpose.replace(/\s+/g, "-")}`
      })
      const runtime = yield* Effect.runtime<never>()
      let ready = false
      let firstError: unknown
      // without a listener ioredis prints every reconnect failure to stderr
      client.on("error", (error) => {
        if (!ready) firstError ??= error
        else Runtime.runFork(runtime)(Effect.logWarning(`redis for the ${purpose} at ${where}: ${errorMessage(error)}`))
      })
      yield* Effect.tryPromise({
        try: () => client.connect(),
        catch: (cause) => {
          client.disconnect()
          return new RedisError({
            message: `cannot connect to redis for the ${purpose} at ${where}: ${errorMessage(firstError ?? cause)}`,
            cause: firstError ?? cause
          })
        }
      })
      ready = true
      return client
    }),
    (client) =>
      Effect.tryPromise(() => client.quit()).pipe(
        Effect.timeout("1 second"),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => client.disconnect()))
      )
  )

/** Runs a command; a transport failure is a defect naming the command and key (the stores have no error channel). */
export const command = <A>(operation: string, key: string, f: () => Promise<A>): Effect.Effect<A> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) => new RedisError({ message: `${operation} ${key}: ${errorMessage(cause)}`, cause })
  }).pipe(Effect.orDie)

/** Checks a key prefix: non-empty, no spaces, no braces (they would become a Redis Cluster hash tag). */
export const checkPrefix = (prefix: string): Effect.Effect<string> =>
  /^[^{}\s]+$/.test(prefix)
    ? Effect.succeed(prefix)
    : Effect.dieMessage(`redis key prefix must be non-empty, without braces or spaces: "${prefix}"`)

/** Default of `cacheTtl`. */
const defaultCacheTtl: Duration.Duration = Duration.seconds(2)

/**
 * A per-process read-through cache of keys (of Redis, or any store) with a short TTL. A write of this process
 * through `write` drops the key, and a read that was in flight during that write does not refill it, so this
 * process reads its own writes at once; another process's write is seen once the entry expires, within `ttl`
 * of the read that loaded it. Failed loads are not kept. A `ttl` of zero disables the cache. At most
 * `capacity` keys are kept; past it, expired entries go first, then the oldest.
 */
interface ReadCache<A> {
  readonly enabled: boolean
  readonly read: <E>(key: string, load: Effect.Effect<A, E>) => Effect.Effect<A, E>
  readonly write: <B, E>(key: string, effect: Effect.Effect<B, E>) => Effect.Effect<B, E>
}

export const makeReadCache = <A>(ttl: Duration.DurationInput, capacity = 10_000): ReadCache<A> => {
  const ttlMs = Duration.toMillis(Duration.decode(ttl))
  const entries = new Map<string, { readonly value: A; readonly expiresAt: number }>()
  // the latest load of each key; a write removes it, so a load that raced a write is not kept
  const loading = new Map<string, object>()
  const store = (key: string, value: A, expiresAt: number, now: number) => {
    entries.delete(key)
    entries.set(key, { value, expiresAt })
    if (entries.size <= capacity) return
    for (const [k, e] of entries) if (e.expiresAt <= now) entries.delete(k)
    for (const k of entries.keys()) {
      if (entries.size <= capacity) break
      entries.delete(k)
    }
  }
  if (ttlMs <= 0) return { enabled: false, read: (_, load) => load, write: (_, effect) => effect }
  return {
    enabled: true,
    read: (key, load) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const hit = entries.get(key)
        if (hit && hit.expiresAt > now) return Effect.succeed(hit.value)
        const token = {}
        loading.set(key, token)
        return load.pipe(
          Effect.tap((value) => {
            if (loading.get(key) === token) store(key, value, now + ttlMs, now)
          }),
          Effect.ensuring(Effect.sync(() => {
            if (loading.get(key) === token) loading.delete(key)
          }))
        )
      }),
    write: (key, effect) =>
      Effect.ensuring(
        effect,
        Effect.sync(() => {
          entries.delete(key)
          loading.delete(key)
        })
      )
  }
}

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

/** Options of the cached JSON stores. */
export interface CacheOptions {
  /** How long a read is served from this process's memory; zero disables the cache. Default 2 seconds. */
  readonly cacheTtl?: Duration.DurationInput | undefined
}

/**
 * A Redis hash of JSON values, each the `schema`'s encoded form; extra fields an older schema does not know
 * are ignored on read, so new optional fields roll out without a migration.
 */
interface JsonHash<A> {
  readonly get: (key: string, field: string) => Effect.Effect<Option.Option<A>>
  /** Every field and value of the hash, by field name. */
  readonly entries: (key: string) => Effect.Effect<ReadonlyArray<readonly [string, A]>>
  readonly set: (key: string, field: string, value: A) => Effect.Effect<void>
  /** `false` when the field was not there. */
  readonly delete: (key: string, field: string) => Effect.Effect<boolean>
}

/**
 * With the cache on, a read loads the whole hash (`HGETALL`) and serves `get` and `entries` of that key from it
 * for `cacheTtl`; values are decoded once per load, on first use, so a corrupted field fails only its readers.
 */
export const makeJsonHash = <A, I>(
  client: IORedis,
  schema: Schema.Schema<A, I>,
  options: CacheOptions & { readonly what: string }
): JsonHash<A> => {
  const decode = decoder(schema, options.what)
  const encode = encoder(schema, options.what)
  const cache = makeReadCache<Snapshot<A>>(options.cacheTtl ?? defaultCacheTtl)
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

/** A Redis string holding one JSON value, the `schema`'s encoded form. */
interface JsonString<A> {
  readonly get: (key: string) => Effect.Effect<Option.Option<A>>
  readonly set: (key: string, value: A) => Effect.Effect<void>
}

/** With the cache on, an absent key is cached too: reading settings a tenant never wrote costs no round trip. */
export const makeJsonString = <A, I>(
  client: IORedis,
  schema: Schema.Schema<A, I>,
  options: CacheOptions & { readonly what: string }
): JsonString<A> => {
  const decode = decoder(schema, options.what)
  const encode = encoder(schema, options.what)
  const cache = makeReadCache<Option.Option<A>>(options.cacheTtl ?? defaultCacheTtl)
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
