import { errorMessage } from "@altan/domain/Errors"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"

/** A Redis command or connection failed; `message` never contains credentials. */
export class RedisError extends Data.TaggedError("RedisError")<{
  readonly message: string
  readonly cause?: unknown
}> {
  static is(u: unknown): u is RedisError {
    return Predicate.isTagged(u, "RedisError")
  }
}

/** The process's Redis connection, shared by every store of the process. */
export class Redis extends Context.Tag("@altan/redis/Redis")<Redis, {
  /** The shared connection; never use it for blocking commands (`XREAD BLOCK`), they stall every other caller. */
  readonly client: IORedis
  /**
   * A new connection with the same options, for blocking commands. It is closed with `disconnect` when the
   * scope closes: a `QUIT` would queue behind the blocked command.
   */
  readonly duplicate: Effect.Effect<IORedis, RedisError, Scope.Scope>
  /**
   * Calls `f` (with when the connection was lost) each time the shared connection is ready again after it was
   * lost. Writes acknowledged shortly before a server crash may be gone (AOF `everysec` loses up to a second):
   * holders of state rewrite what they know. Returns the function that unregisters `f`.
   */
  readonly onReconnect: (f: (lostAt: number) => void) => () => void
  /**
   * Calls `f` (with when) each time the shared connection is lost, once per outage: holders of state that `onReconnect`
   * would rewrite keep it until then. Returns the function that unregisters `f`.
   */
  readonly onDisconnect: (f: (lostAt: number) => void) => () => void
  /** `PING` on the shared connection: the readiness check. */
  readonly ping: Effect.Effect<void, RedisError>
}>() {}

/** Options of `layer`. */
export interface Options {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://...` for TLS. */
  readonly url: string
  /** Shown by `CLIENT LIST`; duplicated connections carry it too. */
  readonly connectionName?: string
}

/** Runs a command; failures become `RedisError`s naming the operation. */
export const attempt = <A>(operation: string, f: () => Promise<A>): Effect.Effect<A, RedisError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) => new RedisError({ message: `${operation}: ${errorMessage(cause)}`, cause })
  })

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
 * Connects `client` (created with `lazyConnect`) within the scope. ioredis keeps reconnecting after a failed
 * first connect and reports the cause only as an `error` event, so both are handled here.
 */
const connect = (
  client: IORedis,
  where: string,
  close: (client: IORedis) => Effect.Effect<void>
): Effect.Effect<IORedis, RedisError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      let ready = false
      let firstError: unknown
      // Without a listener ioredis prints every reconnect failure to stderr.
      client.on("error", (error) => {
        if (!ready) firstError ??= error
        else Runtime.runFork(runtime)(Effect.logWarning(`redis ${where}: ${errorMessage(error)}`))
      })
      yield* Effect.tryPromise({
        try: () => client.connect(),
        catch: (cause) => {
          client.disconnect()
          return new RedisError({
            message: `cannot connect to redis at ${where}: ${errorMessage(firstError ?? cause)}`,
            cause: firstError ?? cause
          })
        }
      })
      ready = true
      return client
    }),
    close
  )

const quit = (client: IORedis) =>
  attempt("QUIT", () => client.quit()).pipe(
    Effect.timeout("1 second"),
    Effect.ignore,
    Effect.ensuring(Effect.sync(() => client.disconnect()))
  )

const disconnect = (client: IORedis) => Effect.sync(() => client.disconnect())

/** Builds the service; the connection is closed (`QUIT`) when the scope closes. */
export const make = (options: Options): Effect.Effect<Redis["Type"], RedisError, Scope.Scope> =>
  Effect.gen(function*() {
    const where = describe(options.url)
    if (!/^rediss?:\/\//.test(options.url) || where === "<invalid url>") {
      return yield* new RedisError({ message: `the redis url must be redis://host:port or rediss://..., got ${where}` })
    }
    const client = new IORedis(options.url, {
      lazyConnect: true,
      // Fail commands fast while the server is away instead of queueing them for ~20 reconnects.
      maxRetriesPerRequest: 2,
      connectTimeout: 5_000,
      ...(options.connectionName ? { connectionName: options.connectionName } : {})
    })
    yield* connect(client, where, quit)
    const listeners = new Set<(lostAt: number) => void>()
    const lostListeners = new Set<(lostAt: number) => void>()
    let lostAt: number | undefined
    client.on("close", () => {
      if (lostAt !== undefined) return
      const at = lostAt = Date.now()
      for (const f of lostListeners) f(at)
    })
    client.on("ready", () => {
      if (lostAt === undefined) return
      const at = lostAt
      lostAt = undefined
      for (const f of listeners) f(at)
    })
    return {
      client,
      duplicate: Effect.suspend(() => connect(client.duplicate(), where, disconnect)),
      onReconnect: (f) => {
        listeners.add(f)
        return () => void listeners.delete(f)
      },
      onDisconnect: (f) => {
        lostListeners.add(f)
        return () => void lostListeners.delete(f)
      },
      ping: Effect.asVoid(attempt("PING", () => client.ping()))
    }
  })

/**
 * A Redis connection for the layer's lifetime; a server that cannot be reached fails the layer. Provide one
 * instance to every store of a process: each use of the same layer value shares its connection.
 */
export const layer = (options: Options): Layer.Layer<Redis, RedisError> => Layer.scoped(Redis, make(options))

/** `REDIS_URL` (secret: it may carry a password). */
export const config: Config.Config<Redacted.Redacted> = Config.redacted("REDIS_URL").pipe(
  Config.withDescription("Redis connection URL, redis://[[user]:password@]host:port[/db].")
)

export const layerConfig: Layer.Layer<Redis, ConfigError.ConfigError | RedisError> = Layer.scoped(
  Redis,
  Effect.gen(function*() {
    const url = yield* config
    return yield* make({ url: Redacted.value(url) })
  })
)

/** Checks a key prefix: non-empty, no spaces, no braces (they would become a Redis Cluster hash tag). */
export const checkPrefix = (prefix: string): Effect.Effect<string> =>
  /^[^{}\s]+$/.test(prefix)
    ? Effect.succeed(prefix)
    : Effect.dieMessage(`redis key prefix must be non-empty, without braces or spaces: "${prefix}"`)

/** A TTL in whole milliseconds for `PX` / `PEXPIRE`: at least 1, since 0 would delete the key. */
export const ttlMillis = (ttl: Duration.DurationInput): number => Math.max(1, Math.round(Duration.toMillis(ttl)))
