import type { ConnectionConfig } from "@altan/domain/ConnectionConfig"
import type { TenantId } from "@altan/domain/Ids"
import * as Redis from "@altan/redis/Redis"
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { Redis as IORedis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as ConnectionStore from "../src/ConnectionStore.js"
import { makeReadCache } from "../src/internal/ReadCache.js"

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `altan-test-${randomUUID().slice(0, 12)}`
const acme = "acme" as TenantId
const globex = "globex" as TenantId

/** Runs `f` with a connection of its own, outside the layers under test. */
const withClient = <A>(f: (client: IORedis) => Promise<A>): Effect.Effect<A> =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = new IORedis(url, { lazyConnect: true, maxRetriesPerRequest: 2 })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => f(client)),
    (client) => Effect.promise(() => client.quit())
  )

afterAll(() =>
  Effect.runPromise(withClient(async (client) => {
    const keys = await client.keys(`${prefix}:*`)
    if (keys.length > 0) await client.del(...keys)
  }))
)

/** One runner's store: a layer instance of its own, with its own connection and cache. */
const runner = (options?: Omit<ConnectionStore.RedisOptions, "prefix">) =>
  Effect.map(
    Layer.build(ConnectionStore.layerRedis({ prefix, ...options }).pipe(Layer.provide(Redis.layer({ url })))),
    Context.get(ConnectionStore.ConnectionStore)
  )

const slack: ConnectionConfig = { type: "api_key", secret: "slack_token", header: "Authorization", prefix: "Bearer " }
const hubspot: ConnectionConfig = { type: "api_key", secret: "hubspot_key", header: "X-Api-Key", prefix: "" }
const salesforce: ConnectionConfig = {
  type: "oauth2",
  client_id: "3MVG9-client",
  client_secret_secret: "salesforce_client_secret",
  authorize_url: "https://login.salesforce.com/services/oauth2/authorize",
  token_url: "https://login.salesforce.com/services/oauth2/token",
  scopes: ["api", "refresh_token"],
  client_auth: "post"
}

const defectMessage = <A>(exit: Exit.Exit<A>): string => {
  expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
  return Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""
}

describe("ConnectionStore.layerRedis", () => {
  it.live("round-trips connections", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      const tenant = "round-trip" as TenantId
      expect(yield* store.list(tenant)).toEqual([])
      expect(yield* store.get(tenant, "slack")).toEqual(Option.none())
      // names of Object.prototype members are ordinary, absent providers
      expect(yield* store.get(tenant, "constructor")).toEqual(Option.none())
      expect(yield* store.get(tenant, "tostring")).toEqual(Option.none())
      yield* store.put(tenant, "slack", slack)
      yield* store.put(tenant, "salesforce", salesforce)
      expect(yield* store.get(tenant, "slack")).toEqual(Option.some(slack))
      expect(yield* store.get(tenant, "salesforce")).toEqual(Option.some(salesforce))
      expect(yield* store.list(tenant)).toEqual([["salesforce", salesforce], ["slack", slack]])
      // a replacement is what the next read returns, even from the cache of the writing process
      const rotated = { ...slack, secret: "slack_token_2" }
      yield* store.put(tenant, "slack", rotated)
      expect(yield* store.get(tenant, "slack")).toEqual(Option.some(rotated))
      expect(yield* store.remove(tenant, "slack")).toBe(true)
      expect(yield* store.remove(tenant, "slack")).toBe(false)
      expect(yield* store.get(tenant, "slack")).toEqual(Option.none())
      expect(yield* store.list(tenant)).toEqual([["salesforce", salesforce]])
    }).pipe(Effect.scoped))

  it.live("stores one hash of connection JSON per tenant", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      yield* store.put("layout" as TenantId, "slack", slack)
      const stored = yield* withClient((c) => c.hgetall(`${prefix}:t:layout:connections`))
      expect(Object.keys(stored)).toEqual(["slack"])
      expect(JSON.parse(stored.slack!)).toEqual(slack)
    }).pipe(Effect.scoped))

  it.live("keeps tenants apart", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      yield* store.put(acme, "slack", slack)
      yield* store.put(globex, "slack", hubspot)
      expect(yield* store.get(acme, "slack")).toEqual(Option.some(slack))
      expect(yield* store.get(globex, "slack")).toEqual(Option.some(hubspot))
      expect(yield* store.list(globex)).toEqual([["slack", hubspot]])
      expect(yield* store.remove(globex, "salesforce")).toBe(false)
      expect(yield* store.remove(globex, "slack")).toBe(true)
      expect(yield* store.get(globex, "slack")).toEqual(Option.none())
      expect(yield* store.get(acme, "slack")).toEqual(Option.some(slack))
    }).pipe(Effect.scoped))

  it.live("removes nothing that is not there", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      expect(yield* store.remove("nobody" as TenantId, "slack")).toBe(false)
      expect(yield* store.list("nobody" as TenantId)).toEqual([])
    }).pipe(Effect.scoped))

  // TestClock drives the cache's TTL; Redis itself is real
  it.effect("another runner sees a write at once for keys it has not cached, within the TTL for the others", () =>
    Effect.gen(function*() {
      const tenant = "two-runners" as TenantId
      const first = yield* runner({ cacheTtl: "2 seconds" })
      const second = yield* runner({ cacheTtl: "2 seconds" })
      yield* first.put(tenant, "slack", slack)
      expect(yield* second.get(tenant, "slack")).toEqual(Option.some(slack))

      yield* first.put(tenant, "hubspot", hubspot)
      expect(yield* first.remove(tenant, "slack")).toBe(true)
      expect(yield* second.get(tenant, "hubspot")).toEqual(Option.none())
      expect(yield* second.list(tenant)).toEqual([["slack", slack]])
      expect(yield* first.list(tenant)).toEqual([["hubspot", hubspot]])

      yield* TestClock.adjust("1999 millis")
      expect(yield* second.get(tenant, "slack")).toEqual(Option.some(slack))
      yield* TestClock.adjust("1 millis")
      expect(yield* second.get(tenant, "slack")).toEqual(Option.none())
      expect(yield* second.list(tenant)).toEqual([["hubspot", hubspot]])
    }).pipe(Effect.scoped))

  it.live("with cacheTtl 0 every read goes to Redis", () =>
    Effect.gen(function*() {
      const tenant = "uncached" as TenantId
      const first = yield* runner({ cacheTtl: 0 })
      const second = yield* runner({ cacheTtl: 0 })
      expect(yield* second.get(tenant, "slack")).toEqual(Option.none())
      yield* first.put(tenant, "slack", slack)
      expect(yield* second.get(tenant, "slack")).toEqual(Option.some(slack))
      expect(yield* second.list(tenant)).toEqual([["slack", slack]])
    }).pipe(Effect.scoped))

  it.live("ignores fields it does not know, so new optional fields need no migration", () =>
    Effect.gen(function*() {
      const key = `${prefix}:t:newer:connections`
      yield* withClient((c) =>
        c.hset(key, "slack", JSON.stringify({ ...slack, status: "needs_reauth", expires_at: "2030-01-01T00:00:00Z" }))
      )
      const store = yield* runner()
      expect(yield* store.get("newer" as TenantId, "slack")).toEqual(Option.some(slack))
    }).pipe(Effect.scoped))

  it.live("a stored value that does not decode is a defect naming its key, not an absent connection", () =>
    Effect.gen(function*() {
      const tenant = "corrupt" as TenantId
      const key = `${prefix}:t:corrupt:connections`
      yield* withClient((c) =>
        c.hset(key, "slack", "{\"type\":\"api_key\"", "hubspot", JSON.stringify({ type: "basic" }), "jira", "{}")
      )
      yield* withClient((c) => c.hset(key, "github", JSON.stringify(slack)))
      for (const cacheTtl of ["2 seconds", 0] as const) {
        const store = yield* runner({ cacheTtl })
        const message = defectMessage(yield* Effect.exit(store.get(tenant, "slack")))
        expect(message).toContain(key)
        expect(message).toContain("slack")
        expect(defectMessage(yield* Effect.exit(store.get(tenant, "hubspot")))).toContain("hubspot")
        expect(defectMessage(yield* Effect.exit(store.list(tenant)))).toContain(key)
        // the tenant's other connections still answer
        expect(yield* store.get(tenant, "github")).toEqual(Option.some(slack))
      }
    }).pipe(Effect.scoped))

  it.live("a key that is not a hash is a defect naming the command and key", () =>
    Effect.gen(function*() {
      const key = `${prefix}:t:wrongtype:connections`
      yield* withClient((c) => c.set(key, "x"))
      const store = yield* runner()
      const message = defectMessage(yield* Effect.exit(store.get("wrongtype" as TenantId, "slack")))
      expect(message).toContain(`HGETALL ${key}`)
      expect(message).toContain("WRONGTYPE")
    }).pipe(Effect.scoped))
})

describe("read cache", () => {
  it.effect("does not keep a read that raced this process's write", () =>
    Effect.gen(function*() {
      const cache = makeReadCache<string>("1 minute")
      const release = yield* Deferred.make<void>()
      let loads = 0
      const load = (value: string) =>
        Effect.andThen(Effect.sync(() => loads++), Deferred.await(release)).pipe(Effect.as(value))
      const racing = yield* Effect.fork(cache.read("k", load("old")))
      yield* Effect.yieldNow()
      yield* cache.write("k", Effect.void)
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(racing)).toBe("old")
      expect(yield* cache.read("k", load("new"))).toBe("new")
      expect(yield* cache.read("k", load("newer"))).toBe("new")
      expect(loads).toBe(2)
    }))
})
