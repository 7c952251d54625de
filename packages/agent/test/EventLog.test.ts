import type { TaskId, TenantId } from "@altan/domain/Ids"
import type { TaskEvent, TaskEventType } from "@altan/domain/Task"
import { Redis } from "@altan/redis/Redis"
import { describe, expect, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as EventLog from "../src/EventLog.js"
import { blockedInXread, cleanup, connections, lastCommands, redisLayer, uniquePrefix, withClient } from "./redis.js"

const prefix = uniquePrefix()
const maxLen = 20
const ttl = Duration.minutes(1)
const acme = "acme" as TenantId
const globex = "globex" as TenantId

let taskCounter = 0
/** A task id of its own per test: the suites share one layer instance. */
const newTask = () => `s${++taskCounter}.t` as TaskId

const event = (taskId: TaskId, type: TaskEventType, step_id?: string): Omit<TaskEvent, "id"> => ({
  type,
  task_id: taskId,
  at: new Date().toISOString(),
  ...(step_id ? { step_id, data: { step: step_id } } : {})
})

const append = (tenant: TenantId, taskId: TaskId, type: TaskEventType, step?: string) =>
  Effect.flatMap(EventLog.EventLog, (log) => log.append(tenant, taskId, event(taskId, type, step)))
const read = (tenant: TenantId, taskId: TaskId, after?: string) =>
  Effect.flatMap(EventLog.EventLog, (log) => log.read(tenant, taskId, after))
const follow = (tenant: TenantId, taskId: TaskId, after?: string) =>
  Stream.unwrap(Effect.map(EventLog.EventLog, (log) => log.follow(tenant, taskId, after)))

/** Follows in the background, offering every event to a queue as it arrives. */
const followInto = (tenant: TenantId, taskId: TaskId, after?: string) =>
  Effect.gen(function*() {
    const seen = yield* Queue.unbounded<TaskEvent>()
    const fiber = yield* follow(tenant, taskId, after).pipe(
      Stream.tap((e) => Queue.offer(seen, e)),
      Stream.runCollect,
      Effect.map(Chunk.toReadonlyArray),
      Effect.fork
    )
    return { seen, fiber }
  })

const join = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Fiber.join(fiber).pipe(Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => "follow did not end" }))

const redisLog = EventLog.layerRedis({ prefix, maxLen, ttl })
const logKey = (tenant: string, taskId: string) =>
  `${prefix}:t:${tenant}:ev:{${tenant}/${taskId.slice(0, taskId.lastIndexOf("."))}}:${taskId}`

const implementations = [
  ["memory", EventLog.layerMemory({ maxLen })],
  ["redis", redisLog.pipe(Layer.provide(redisLayer()), Layer.merge(cleanup(prefix)))]
] as const

describe.each(implementations)("EventLog.%s", (_name, implementation) => {
  layer(implementation, { excludeTestServices: true })((it) => {
    it.effect("appends with increasing ids and reads back in order", () =>
      Effect.gen(function*() {
        const task = newTask()
        const appended = [
          yield* append(acme, task, "task.queued"),
          yield* append(acme, task, "task.started"),
          yield* append(acme, task, "tool.started", "a")
        ]
        expect(new Set(appended.map((e) => e.id)).size).toBe(3)
        expect(appended[2]).toMatchObject({ type: "tool.started", task_id: task, step_id: "a", data: { step: "a" } })
        expect(yield* read(acme, task)).toEqual(appended)
        expect(yield* read(acme, newTask())).toEqual([])
      }))

    it.effect("reads strictly after a given id", () =>
      Effect.gen(function*() {
        const task = newTask()
        const [a, b, c] = [
          yield* append(acme, task, "task.queued"),
          yield* append(acme, task, "task.started"),
          yield* append(acme, task, "task.succeeded")
        ]
        expect(yield* read(acme, task, a!.id)).toEqual([b, c])
        expect(yield* read(acme, task, b!.id)).toEqual([c])
        expect(yield* read(acme, task, c!.id)).toEqual([])
        // an id the log cannot have issued replays everything rather than skipping anything
        expect(yield* read(acme, task, "garbage")).toEqual([a, b, c])
      }))

    it.effect("follow replays, then delivers live events, and ends after the terminal event", () =>
      Effect.gen(function*() {
        const task = newTask()
        yield* append(acme, task, "task.queued")
        yield* append(acme, task, "task.started")
        const { fiber, seen } = yield* followInto(acme, task)
        expect((yield* Queue.takeN(seen, 2)).pipe(Chunk.map((e) => e.type), Chunk.toArray)).toEqual([
          "task.queued",
          "task.started"
        ])
        yield* Effect.sleep("20 millis")
        expect(fiber.unsafePoll()).toBeNull()
        yield* append(acme, task, "tool.started", "a")
        expect((yield* Queue.take(seen)).type).toBe("tool.started")
        yield* append(acme, task, "tool.completed", "a")
        yield* append(acme, task, "task.succeeded")
        const all = yield* join(fiber)
        expect(all.map((e) => e.type)).toEqual([
          "task.queued",
          "task.started",
          "tool.started",
          "tool.completed",
          "task.succeeded"
        ])
        expect(all).toEqual(yield* read(acme, task))
      }))

    it.effect("follow from a Last-Event-ID resumes exactly after it; a finished log ends the stream", () =>
      Effect.gen(function*() {
        const task = newTask()
        const events: Array<TaskEvent> = []
        for (const type of ["task.queued", "task.started", "tool.started", "tool.failed", "task.failed"] as const) {
          events.push(yield* append(acme, task, type, "a"))
        }
        expect(yield* join(yield* Effect.fork(Stream.runCollect(follow(acme, task, events[1]!.id)))))
          .toEqual(Chunk.fromIterable(events.slice(2)))
        expect(yield* join(yield* Effect.fork(Stream.runCollect(follow(acme, task))))).toEqual(
          Chunk.fromIterable(events)
        )
        // a client that already saw the terminal event reconnects: nothing more, and no hanging
        expect(Chunk.size(yield* join(yield* Effect.fork(Stream.runCollect(follow(acme, task, events[4]!.id))))))
          .toBe(0)
      }))

    it.effect("many followers, some interrupted, all others get every event", () =>
      Effect.gen(function*() {
        const tasks = [newTask(), newTask(), newTask()]
        const followers = yield* Effect.forEach(
          Array.from({ length: 30 }, (_, i) => tasks[i % 3]!),
          (task) => followInto(acme, task)
        )
        yield* Effect.sleep("20 millis")
        // interrupted followers let go of their logs without disturbing the others
        yield* Effect.forEach(followers.slice(0, 6), ({ fiber }) => Fiber.interrupt(fiber))
        for (const task of tasks) yield* append(acme, task, "task.started")
        for (const task of tasks) yield* append(acme, task, "task.cancelled")
        for (const { fiber } of followers.slice(6)) {
          expect((yield* join(fiber)).map((e) => e.type)).toEqual(["task.started", "task.cancelled"])
        }
      }))

    it.effect("maxLen bounds a log, keeping the newest events", () =>
      Effect.gen(function*() {
        const task = newTask()
        const appended: Array<TaskEvent> = []
        for (let i = 0; i < 300; i++) appended.push(yield* append(acme, task, "tool.completed", `s${i}`))
        const kept = yield* read(acme, task)
        // Redis trims approximately (whole stream nodes of 100 entries), memory exactly
        expect(kept.length).toBeGreaterThanOrEqual(maxLen)
        expect(kept.length).toBeLessThanOrEqual(maxLen + 100)
        expect(kept).toEqual(appended.slice(-kept.length))
      }))

    it.effect("tenants never see each other's logs", () =>
      Effect.gen(function*() {
        const task = newTask()
        yield* append(acme, task, "task.queued")
        yield* append(acme, task, "task.succeeded")
        expect(yield* read(globex, task)).toEqual([])
        // globex follows the same task id: acme's terminal event does not end it
        const { fiber } = yield* followInto(globex, task)
        yield* Effect.sleep("30 millis")
        expect(fiber.unsafePoll()).toBeNull()
        yield* append(globex, task, "task.cancelled")
        expect((yield* join(fiber)).map((e) => e.type)).toEqual(["task.cancelled"])
        expect((yield* read(acme, task)).map((e) => e.type)).toEqual(["task.queued", "task.succeeded"])
      }))
  })
})

const connectionName = `${prefix}-conn`
layer(
  redisLog.pipe(Layer.provideMerge(redisLayer(connectionName)), Layer.merge(cleanup(prefix))),
  { excludeTestServices: true }
)("EventLog.layerRedis", (it) => {
  it.effect("one stream per task under a tenant-scoped key, with the TTL set on every append", () =>
    Effect.gen(function*() {
      const { client } = yield* Redis
      const task = newTask()
      const first = yield* append(acme, task, "task.queued")
      expect(first.id).toMatch(/^\d+-\d+$/)
      const key = logKey("acme", task)
      expect(yield* Effect.promise(() => client.type(key))).toBe("stream")
      expect(yield* Effect.promise(() => client.exists(logKey("globex", task)))).toBe(0)
      yield* Effect.promise(() => client.pexpire(key, 1_000))
      yield* append(acme, task, "task.started")
      const ms = yield* Effect.promise(() => client.pttl(key))
      expect(ms).toBeGreaterThan(Duration.toMillis(ttl) - 5_000)
      expect(ms).toBeLessThanOrEqual(Duration.toMillis(ttl))
    }))

  it.effect("followers share one blocking connection, however many there are", () =>
    Effect.gen(function*() {
      // the layer's connection and its follower connection
      expect(yield* connections(connectionName)).toBe(2)
      const task = newTask()
      const followers = yield* Effect.forEach(Array.from({ length: 25 }), () => followInto(acme, task))
      yield* Effect.sleep("30 millis")
      expect(yield* connections(connectionName)).toBe(2)
      yield* append(acme, task, "task.succeeded")
      for (const { fiber } of followers) expect((yield* join(fiber)).length).toBe(1)
      expect(yield* connections(connectionName)).toBe(2)
    }))

  it.effect("a follower joining while the shared XREAD blocks gets live events at once", () =>
    Effect.gen(function*() {
      const idle = yield* followInto(acme, newTask())
      // the shared XREAD is blocked on the idle log only
      yield* blockedInXread(connectionName)
      const task = newTask()
      const late = yield* followInto(acme, task)
      const started = Date.now()
      yield* append(acme, task, "task.started")
      yield* Queue.take(late.seen)
      // without CLIENT UNBLOCK this waits for the 5 s block to end
      expect(Date.now() - started).toBeLessThan(1_000)
      yield* Fiber.interrupt(idle.fiber)
      yield* Fiber.interrupt(late.fiber)
    }))

  it.effect("a follower that leaves before the shared read picks it up stops the wake-ups; the layer closes at once", () =>
    Effect.gen(function*() {
      const name = `${connectionName}-churn`
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(redisLog.pipe(Layer.provide(redisLayer(name))), scope)
      const idle = yield* followInto(acme, newTask()).pipe(Effect.provide(context))
      yield* blockedInXread(name)
      const task = newTask()
      yield* append(acme, task, "task.queued").pipe(Effect.provide(context))
      const passing = yield* followInto(acme, task).pipe(Effect.provide(context))
      // it is registered (it has read), and both leave before the cut-short XREAD is issued again
      yield* Queue.take(passing.seen)
      yield* Fiber.interrupt(passing.fiber)
      yield* Fiber.interrupt(idle.fiber)
      yield* append(acme, task, "task.started").pipe(Effect.provide(context))
      yield* Effect.sleep("100 millis")
      // the wake-ups (CLIENT UNBLOCK every 5 ms) stopped with nothing left to pick up
      expect(yield* lastCommands(name)).not.toContain("client|unblock")
      const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("3 seconds"), Effect.option)
      expect(Option.isSome(closed)).toBe(true)
      expect(yield* connections(name)).toBe(0)
    }))

  it.effect("events survive the layer: written through one instance, read through a fresh one", () =>
    Effect.gen(function*() {
      const task = newTask()
      const fresh = redisLog.pipe(Layer.provide(redisLayer()))
      const written = yield* Effect.all([
        append(acme, task, "task.queued"),
        append(acme, task, "task.succeeded")
      ]).pipe(Effect.provide(fresh))
      // the first instance's connections are closed now
      expect(yield* read(acme, task).pipe(Effect.provide(fresh))).toEqual(written)
      expect(yield* follow(acme, task, written[0].id).pipe(Stream.runCollect, Effect.provide(fresh))).toEqual(
        Chunk.of(written[1])
      )
    }))

  it.effect("a corrupt entry is a defect, not a silently skipped event", () =>
    Effect.gen(function*() {
      const task = newTask()
      yield* withClient((client) => client.xadd(logKey("acme", task), "*", "e", "{not json"))
      const exit = yield* Effect.exit(read(acme, task))
      expect(exit._tag).toBe("Failure")
      expect(JSON.stringify(exit)).toContain("does not decode")
    }))
})
