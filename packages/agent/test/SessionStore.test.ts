import type { SessionId, TaskId, TenantId, ToolId } from "@altan/domain/Ids"
import { emptyUsage, type Task } from "@altan/domain/Task"
import { expect, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Redis } from "../src/Redis.js"
import * as SessionStore from "../src/SessionStore.js"
import { cleanup, redisLayer, uniquePrefix, withClient } from "./redis.js"

const prefix = uniquePrefix()
const ttl = Duration.minutes(1)
const ttlMs = Duration.toMillis(ttl)
const acme = "acme" as TenantId
const globex = "globex" as TenantId

/** A store and the connection it uses; every `Effect.provide` opens a new connection. */
const redisStore = SessionStore.layerRedis({ prefix, ttl }).pipe(Layer.provideMerge(redisLayer()))

const stateKey = (tenant: string, session: string) => `${prefix}:t:${tenant}:s:{${tenant}/${session}}`
const indexKey = (tenant: string, session: string, task: string) =>
  `${prefix}:t:${tenant}:task:{${tenant}/${session}}:${task}`

const task = (session: string, suffix: string): Task => ({
  task_id: `${session}.${suffix}` as TaskId,
  session_id: session as SessionId,
  status: "succeeded",
  input: { steps: [{ id: "a", tool: "text.upper" as ToolId, input: { text: "hi" } }] },
  output: { text: "HI" },
  steps: [{
    id: "a",
    tool: "text.upper",
    status: "succeeded",
    input: { text: "hi" },
    output: { text: "HI" },
    attempts: 1,
    started_at: "2024-05-01T10:00:00.000Z",
    finished_at: "2024-05-01T10:00:00.003Z",
    duration_ms: 3
  }],
  usage: { ...emptyUsage, tool_calls: 1 },
  created_at: "2024-05-01T10:00:00.000Z",
  updated_at: "2024-05-01T10:00:00.003Z"
})

const state = (session: string, suffixes: ReadonlyArray<string>): SessionStore.SessionState => {
  const tasks = suffixes.map((s) => task(session, s))
  return {
    session_id: session as SessionId,
    tasks: Object.fromEntries(tasks.map((t) => [t.task_id, t])),
    task_ids: tasks.map((t) => t.task_id),
    messages: [{ role: "user", content: "hello" }],
    variables: { count: 2, nested: { ok: true } },
    updated_at: "2024-05-01T10:00:00.003Z"
  }
}

const save = (tenant: TenantId, s: SessionStore.SessionState) =>
  Effect.flatMap(SessionStore.SessionStore, (store) => store.save(tenant, s))
const load = (tenant: TenantId, session: string) =>
  Effect.flatMap(SessionStore.SessionStore, (store) => store.load(tenant, session as SessionId))
const findTask = (tenant: TenantId, taskId: string) =>
  Effect.flatMap(SessionStore.SessionStore, (store) => store.findTask(tenant, taskId as TaskId))
const pttl = (key: string) => withClient((client) => client.pttl(key))

/** The same checks for every implementation: a tenant finds its own tasks and nothing else. */
const findTaskChecks = Effect.gen(function*() {
  yield* save(acme, state("find1", ["a", "b"]))
  yield* save(globex, state("find2", ["c"]))
  expect(yield* findTask(acme, "find1.a")).toEqual(Option.some("find1"))
  expect(yield* findTask(acme, "find1.b")).toEqual(Option.some("find1"))
  expect(yield* findTask(globex, "find2.c")).toEqual(Option.some("find2"))
  // another tenant's task, an unknown task of a known session, an unknown session, a malformed id
  expect(yield* findTask(globex, "find1.a")).toEqual(Option.none())
  expect(yield* findTask(acme, "find2.c")).toEqual(Option.none())
  expect(yield* findTask(acme, "find1.zzz")).toEqual(Option.none())
  expect(yield* findTask(acme, "nosuch.a")).toEqual(Option.none())
  expect(yield* findTask(acme, "find1")).toEqual(Option.none())
  // a task added by a later save is found too
  yield* save(acme, state("find1", ["a", "b", "d"]))
  expect(yield* findTask(acme, "find1.d")).toEqual(Option.some("find1"))
})

layer(cleanup(prefix), { excludeTestServices: true })("SessionStore", (it) => {
  it.effect("memory: findTask", () => findTaskChecks.pipe(Effect.provide(SessionStore.layerMemory)))

  it.effect("redis: findTask", () => findTaskChecks.pipe(Effect.provide(redisStore)))

  it.effect("redis: state saved by one connection loads, equal, through a new one after the first closed", () =>
    Effect.gen(function*() {
      const original = state("trip", ["a", "b"])
      // each provide builds the layer anew: a connection that is quit when the effect ends
      yield* save(acme, original).pipe(Effect.provide(redisStore))
      const loaded = yield* load(acme, "trip").pipe(Effect.provide(redisStore))
      expect(Option.getOrThrow(loaded)).toEqual(original)
      expect(yield* load(globex, "trip").pipe(Effect.provide(redisStore))).toEqual(Option.none())
      expect(yield* load(acme, "nosuch").pipe(Effect.provide(redisStore))).toEqual(Option.none())
      expect(yield* withClient((client) => client.exists(stateKey(acme, "trip")))).toBe(1)
    }))

  it.effect("redis: save sets the TTL on state and index, load and save refresh it", () =>
    Effect.gen(function*() {
      yield* save(acme, state("ttl", ["a"]))
      for (const key of [stateKey(acme, "ttl"), indexKey(acme, "ttl", "ttl.a")]) {
        const ms = yield* pttl(key)
        expect(ms).toBeGreaterThan(ttlMs - 5_000)
        expect(ms).toBeLessThanOrEqual(ttlMs)
      }
      yield* withClient((client) => client.pexpire(stateKey(acme, "ttl"), 1_000))
      expect(Option.isSome(yield* load(acme, "ttl"))).toBe(true)
      expect(yield* pttl(stateKey(acme, "ttl"))).toBeGreaterThan(ttlMs - 5_000)

      yield* withClient((client) =>
        client.multi().pexpire(stateKey(acme, "ttl"), 1_000).pexpire(indexKey(acme, "ttl", "ttl.a"), 1_000).exec()
      )
      // the first save after a load rewrites the index entries of every task, with a fresh TTL
      yield* save(acme, state("ttl", ["a"]))
      expect(yield* pttl(stateKey(acme, "ttl"))).toBeGreaterThan(ttlMs - 5_000)
      expect(yield* pttl(indexKey(acme, "ttl", "ttl.a"))).toBeGreaterThan(ttlMs - 5_000)
    }).pipe(Effect.provide(redisStore)))

  it.effect("redis: a save is one MULTI (index entries only for new tasks), a load one GETEX", () =>
    Effect.gen(function*() {
      const { client } = yield* Redis
      const info = (yield* Effect.promise(() => client.client("INFO"))) as string
      const address = /addr=(\S+)/.exec(info)![1]!
      // MONITOR on another connection, keeping what the store's connection sends
      const monitor = yield* Effect.acquireRelease(
        withClient((c) => c.monitor()),
        (m) => Effect.sync(() => m.disconnect())
      )
      let seen: Array<string> = []
      monitor.on("monitor", (_time: string, args: Array<string>, source: string) => {
        if (source === address) seen.push(args[0]!.toLowerCase())
      })
      const commands = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          seen = []
          yield* effect
          // a marker on the same connection: once MONITOR shows it, it has shown everything before it
          yield* Effect.promise(() => client.ping("marker"))
          while (!seen.includes("ping")) yield* Effect.sleep("2 millis")
          return seen.slice(0, seen.indexOf("ping"))
        })

      expect(yield* commands(save(acme, state("mono", ["a", "b"])))).toEqual(["multi", "set", "set", "set", "exec"])
      expect(yield* commands(save(acme, state("mono", ["a", "b"])))).toEqual(["multi", "set", "exec"])
      expect(yield* commands(save(acme, state("mono", ["a", "b", "c"])))).toEqual(["multi", "set", "set", "exec"])
      expect(yield* commands(load(acme, "mono"))).toEqual(["getex"])
      expect(yield* commands(findTask(acme, "mono.c"))).toEqual(["get"])
    }).pipe(Effect.scoped, Effect.provide(redisStore)))

  it.effect("redis: an expired index entry does not hide a task; findTask repairs it", () =>
    Effect.gen(function*() {
      yield* save(acme, state("repair", ["a"]))
      yield* withClient((client) => client.del(indexKey(acme, "repair", "repair.a")))
      expect(yield* findTask(acme, "repair.a")).toEqual(Option.some("repair"))
      // repaired with the session's own expiry time: an index entry never outlives its session
      const [index, session] = yield* withClient((client) =>
        Promise.all([indexKey(acme, "repair", "repair.a"), stateKey(acme, "repair")].map((key) =>
          client.call("PEXPIRETIME", key) as Promise<number>
        ))
      )
      expect(index).toBeGreaterThan(0)
      expect(index).toBeLessThanOrEqual(session!)
      expect(yield* findTask(globex, "repair.a")).toEqual(Option.none())
    }).pipe(Effect.provide(redisStore)))

  it.effect("redis: a stored value that does not decode is a defect, not an absent session", () =>
    Effect.gen(function*() {
      yield* withClient((client) => client.set(stateKey(acme, "corrupt"), "{\"not\": \"a session\"}", "PX", 60_000))
      const exit = yield* Effect.exit(load(acme, "corrupt"))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause)).toContain("does not decode")
      // and the value is still there
      expect(yield* withClient((client) => client.get(stateKey(acme, "corrupt")))).toBe("{\"not\": \"a session\"}")
    }).pipe(Effect.provide(redisStore)))
})
