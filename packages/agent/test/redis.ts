import * as Redis from "@altan/redis/Redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Redis as IORedis } from "ioredis"
import { randomUUID } from "node:crypto"

/** The Redis the tests run against; `REDIS_URL` overrides the local default. */
export const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

/** A key prefix (and connection name) of its own per test file run, so concurrent runs never collide. */
export const uniquePrefix = (): string => `altan-test-${randomUUID().slice(0, 12)}`

/** A new connection each time the layer is built (`Effect.provide` builds it anew). */
export const redisLayer = (connectionName?: string): Layer.Layer<Redis.Redis, Redis.RedisError> =>
  Redis.layer({ url, ...(connectionName ? { connectionName } : {}) })

/** Runs `f` with a connection of its own, outside any layer under test. */
export const withClient = <A>(f: (client: IORedis) => Promise<A>): Effect.Effect<A> =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = new IORedis(url, { lazyConnect: true, maxRetriesPerRequest: 2 })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => f(client)),
    (client) => Effect.promise(() => client.quit())
  ).pipe(Effect.scoped)

/** Deletes every key under `prefix` (SCAN + DEL). */
export const deleteKeys = (prefix: string): Effect.Effect<number> =>
  withClient(async (client) => {
    let cursor = "0"
    let deleted = 0
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000)
      cursor = next
      if (keys.length > 0) deleted += await client.del(...keys)
    } while (cursor !== "0")
    return deleted
  })

/** Cleans the prefix's keys when the test file's layer is torn down. */
export const cleanup = (prefix: string): Layer.Layer<never> =>
  Layer.scopedDiscard(Effect.addFinalizer(() => deleteKeys(prefix)))

/** How many connections carry this name (`CLIENT LIST`). */
export const connections = (name: string): Effect.Effect<number> =>
  withClient(async (client) => {
    const list = (await client.client("LIST")) as string
    return list.split("\n").filter((line) => line.includes(` name=${name} `)).length
  })

/** The last command of each connection named `name` (`CLIENT LIST`'s `cmd`, e.g. `xread`, `client|unblock`). */
export const lastCommands = (name: string): Effect.Effect<Array<string>> =>
  withClient(async (client) => {
    const list = (await client.client("LIST")) as string
    return list.split("\n").filter((line) => line.includes(` name=${name} `)).map((line) =>
      / cmd=(\S+)/.exec(line)?.[1] ?? ""
    )
  })

/** Resolves once a connection named `name` is blocked in an `XREAD` (`CLIENT LIST`: `cmd=xread`, flag `b`); dies after 5 s. */
export const blockedInXread = (name: string): Effect.Effect<void> =>
  withClient(async (client) => {
    for (const deadline = Date.now() + 5_000; Date.now() < deadline;) {
      const list = (await client.client("LIST")) as string
      const blocked = list.split("\n").some((line) =>
        line.includes(` name=${name} `) && / cmd=xread /.test(line) && /flags=\S*b/.test(line)
      )
      if (blocked) return
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    throw new Error(`no connection named ${name} blocked in XREAD within 5 s`)
  })
