import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Redis as IORedis } from "ioredis"

/** An ioredis connection for the scope's lifetime; a bad URL fails here, with a message naming `purpose`. */
export const connect = (url: string, purpose: string): Effect.Effect<IORedis, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const client = new IORedis(url, {
          lazyConnect: true,
          maxRetriesPerRequest: 2,
          connectTimeout: 5_000,
          connectionName: `altan-${purpose}`
        })
        // ioredis reports each failed reconnect as an `error` event (printed when nobody listens); the command
        // that needs the connection fails on its own, and the stores turn that into their own outcome
        client.on("error", () => undefined)
        await client.connect()
        return client
      },
      catch: (e) => new Error(`cannot connect to redis for the ${purpose}: ${(e as Error).message}`)
    }),
    (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
  )
