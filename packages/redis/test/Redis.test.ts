import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { randomUUID } from "node:crypto"
import * as Redis from "../src/Redis.js"

/** The Redis the tests run against; `REDIS_URL` overrides the local default. */
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

/** A connection of the test's own, to look at the server from outside the layers under test. */
const observer = Redis.layer({ url, connectionName: `altan-test-observer-${randomUUID().slice(0, 8)}` })

/** How many connections carry this name (`CLIENT LIST`). */
const connections = (name: string) =>
  Effect.gen(function*() {
    const { client } = yield* Redis.Redis
    const list = String(yield* Redis.attempt("CLIENT LIST", () => client.client("LIST")))
    return list.split("\n").filter((line) => line.includes(` name=${name} `)).length
  })

/** The count once it is `expected`, or what it is after 2 s: the server sees a closed connection go a moment later. */
const settled = (name: string, expected: number) =>
  connections(name).pipe(
    Effect.filterOrFail((n) => n === expected),
    Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("2 seconds"))),
    Effect.orElse(() => connections(name))
  )

/** A stand-in for a store: a service built from the `Redis` of its context. */
const store = (id: string) => {
  const tag = Context.GenericTag<{ readonly client: Redis.Redis["Type"]["client"] }>(`test/${id}`)
  return Layer.effect(tag, Effect.map(Redis.Redis, ({ client }) => ({ client })))
}

it.live("Redis.layer connects, answers PING and fails clearly on an unreachable server or a bad url", () =>
  Effect.gen(function*() {
    yield* Effect.flatMap(Redis.Redis, (redis) => redis.ping).pipe(Effect.provide(Redis.layer({ url })))
    const refused = yield* Layer.build(Redis.layer({ url: "redis://user:secret@127.0.0.1:1" })).pipe(
      Effect.scoped,
      Effect.flip
    )
    expect(refused._tag).toBe("RedisError")
    expect(refused.message).toContain("cannot connect to redis at redis://127.0.0.1:1")
    expect(refused.message).toContain("ECONNREFUSED")
    expect(refused.message).not.toContain("secret")
    const invalid = yield* Layer.build(Redis.layer({ url: "localhost:6379" })).pipe(Effect.scoped, Effect.exit)
    expect(Exit.isFailure(invalid)).toBe(true)
    expect(JSON.stringify(invalid)).toContain("the redis url must be")
    expect(JSON.stringify(invalid)).not.toContain("localhost:6379")
  }))

describe("one connection per process", () => {
  it.live("the layers a Redis layer is provided to share its one connection; duplicates close with their scope", () =>
    Effect.gen(function*() {
      const name = `altan-test-${randomUUID().slice(0, 12)}`
      const redis = Redis.layer({ url, connectionName: name })
      // provided three times, as the runtime provides it to each service's stores: still built once
      const stores = Layer.mergeAll(
        store("a").pipe(Layer.provide(redis)),
        store("b").pipe(Layer.provide(redis)),
        Layer.merge(store("c"), store("d")).pipe(Layer.provideMerge(redis))
      )
      const scope = yield* Scope.make()
      const built = yield* Layer.buildWithScope(stores, scope)
      expect(yield* connections(name)).toBe(1)

      // a connection for blocking commands is one more, until its scope closes
      const blocking = yield* Scope.make()
      const duplicate = yield* Context.get(built, Redis.Redis).duplicate.pipe(Scope.extend(blocking))
      expect(yield* Effect.promise(() => duplicate.ping())).toBe("PONG")
      expect(yield* connections(name)).toBe(2)
      yield* Scope.close(blocking, Exit.void)
      expect(yield* settled(name, 1)).toBe(1)

      yield* Scope.close(scope, Exit.void)
      expect(yield* settled(name, 0)).toBe(0)
    }).pipe(Effect.provide(observer)))

  it.live("onReconnect tells the holders of state when the shared connection is back after it was lost", () =>
    Effect.gen(function*() {
      const name = `altan-test-${randomUUID().slice(0, 12)}`
      const redis = yield* Redis.make({ url, connectionName: name })
      const back = yield* Deferred.make<number>()
      const unregister = redis.onReconnect((lostAt) => Deferred.unsafeDone(back, Exit.succeed(lostAt)))
      const before = Date.now()
      const id = yield* Redis.attempt("CLIENT ID", () => redis.client.client("ID"))
      yield* Effect.flatMap(
        Redis.Redis,
        ({ client }) => Redis.attempt("CLIENT KILL", () => client.client("KILL", "ID", String(id)))
      )
      const lostAt = yield* Deferred.await(back).pipe(Effect.timeout("5 seconds"))
      expect(lostAt).toBeGreaterThanOrEqual(before)
      yield* redis.ping
      unregister()
    }).pipe(Effect.scoped, Effect.provide(observer)))
})
