import type { SessionId, TaskId, TenantId, ToolId } from "@altan/domain/Ids"
import type { ChatMessage } from "@altan/domain/Llm"
import { emptyUsage, type Task } from "@altan/domain/Task"
import { Redis } from "@altan/redis/Redis"
import { expect, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as EventLog from "../src/EventLog.js"
import * as TaskStore from "../src/TaskStore.js"
import { cleanup, redisLayer, uniquePrefix, withClient } from "./redis.js"

const prefix = uniquePrefix()
const ttl = Duration.minutes(1)
const ttlMs = Duration.toMillis(ttl)
const acme = "acme" as TenantId
const globex = "globex" as TenantId

/** A store and the connection it uses; every `Effect.provide` opens a new connection. */
const redisStore = TaskStore.layerRedis({ prefix, ttl }).pipe(Layer.provideMerge(redisLayer("altan-taskstore-test")))
/** The memory store, with the in-process event log it appends to. */
const memoryStore = TaskStore.layerMemory().pipe(Layer.provideMerge(EventLog.layerMemory()))
/** The Redis store beside the Redis event log of the same prefix, which reads what the store's writes appended. */
const redisStoreAndLog = EventLog.layerRedis({ prefix }).pipe(Layer.provideMerge(redisStore), Layer.orDie)
const recordKey = (tenant: string, session: string, task: string) =>
  `${prefix}:t:${tenant}:tr:{${tenant}/${session}}:${task}`

const task = (session: string, suffix: string, at = "2024-05-01T10:00:00.003Z"): Task => ({
  task_id: `${session}.${suffix}` as TaskId,
  session_id: session as SessionId,
  status: "running",
  input: { steps: [{ id: "a", tool: "text.upper" as ToolId, input: { text: "hi" } }] },
  steps: [{ id: "a", tool: "text.upper", status: "running", input: { text: "hi" }, attempts: 1 }],
  usage: { ...emptyUsage, tool_calls: 1 },
  created_at: "2024-05-01T10:00:00.000Z",
  updated_at: at
})
const record = (t: Task): TaskStore.TaskRecord => ({ task: t, specs: [], on_unknown_outcome: "fail" })
const store = TaskStore.TaskStore

/** What every implementation must do. */
const contract = Effect.gen(function*() {
  const s = yield* store
  const session = `c${Math.random().toString(36).slice(2, 8)}` as SessionId
  const first = task(session, "a")
  yield* s.put(acme, record(first), { created: true })
  expect(yield* s.get(acme, first.task_id)).toEqual(Option.some(record(first)))
  // a transition rewrites the whole record
  const done = {
    ...first,
    status: "succeeded" as const,
    output: { text: "HI" },
    updated_at: "2024-05-01T10:00:01.000Z"
  }
  yield* s.put(acme, record(done))
  expect(Option.getOrThrow(yield* s.get(acme, first.task_id)).task).toEqual(done)
  yield* s.put(acme, record(task(session, "b")), { created: true })
  // another tenant never sees it, whatever the ids
  expect(yield* s.get(globex, first.task_id)).toEqual(Option.none())
  expect(yield* s.summary(globex, session)).toEqual(Option.none())
  expect(yield* s.get(acme, `${session}.nosuch` as TaskId)).toEqual(Option.none())

  // the conversation is appended to, and read back newest-first within a budget, cut at user messages
  const turn = (i: number): Array<ChatMessage> => [
    { role: "user", content: `question ${i}` },
    { role: "assistant", content: `answer ${i}`.padEnd(40, ".") }
  ]
  // each with a write of a task's record, as a task's end appends its exchange
  const later = { ...done, updated_at: "2024-05-01T10:00:02.000Z" }
  for (let i = 0; i < 100; i++) yield* s.put(acme, record(later), { messages: turn(i) })
  const summary = Option.getOrThrow(yield* s.summary(acme, session))
  expect(summary).toEqual({
    task_ids: [first.task_id, `${session}.b`],
    message_count: 200,
    updated_at: "2024-05-01T10:00:02.000Z"
  })
  const recent = yield* s.recentMessages(acme, session, 500)
  expect(recent[0]).toEqual({ role: "user", content: `question ${100 - recent.length / 2}` })
  expect(recent.at(-1)).toEqual(turn(99)[1])
  expect(recent.reduce((n, m) => n + (m.content?.length ?? 0), 0)).toBeLessThanOrEqual(500)
  expect(recent.length).toBeGreaterThan(2)
  // all of it when the budget allows (more than one page of the Redis list)
  expect((yield* s.recentMessages(acme, session, 1_000_000)).length).toBe(200)

  yield* s.resetMessages(acme, session, "2024-05-01T10:00:03.000Z")
  expect(Option.getOrThrow(yield* s.summary(acme, session)).message_count).toBe(0)
  expect(yield* s.recentMessages(acme, session, 1000)).toEqual([])
  // the tasks stay
  expect(Option.isSome(yield* s.get(acme, first.task_id))).toBe(true)
})

/** The index of calls waiting for approval follows the records that are put. */
const approvalIndex = Effect.gen(function*() {
  const s = yield* store
  const tenant = `ix${Math.random().toString(36).slice(2, 8)}` as TenantId
  const waitingTask = (session: string, requestedAt: string): Task => {
    const t = task(session, "w")
    return {
      ...t,
      status: "waiting",
      steps: [{
        ...t.steps[0]!,
        status: "waiting_approval",
        approval: { input_hash: "ab".repeat(32), requested_at: requestedAt, expires_at: "2024-05-02T10:00:00.000Z" }
      }]
    }
  }
  const later = waitingTask("s2", "2024-05-01T10:00:02.000Z")
  const earlier = waitingTask("s1", "2024-05-01T10:00:01.000Z")
  yield* s.put(tenant, record(later), { created: true })
  yield* s.put(tenant, record(earlier), { created: true })
  const all = yield* s.pendingApprovals(tenant, undefined, 10)
  expect(all.entries.map((e) => e.task_id)).toEqual([earlier.task_id, later.task_id])
  expect(all.entries[0]).toMatchObject({ step_id: "a", tool: "text.upper", input: { text: "hi" }, session_id: "s1" })
  expect(all.next).toBeUndefined()
  // a page at a time
  const first = yield* s.pendingApprovals(tenant, undefined, 1)
  expect(first.entries.map((e) => e.task_id)).toEqual([earlier.task_id])
  const second = yield* s.pendingApprovals(tenant, first.next, 1)
  expect(second.entries.map((e) => e.task_id)).toEqual([later.task_id])
  expect(second.next).toBeUndefined()
  // decided: out of the index; other tenants never see it
  const decided = {
    ...earlier,
    status: "running" as const,
    steps: [{ ...earlier.steps[0]!, status: "pending" as const }]
  }
  yield* s.put(tenant, record(decided))
  expect((yield* s.pendingApprovals(tenant, undefined, 10)).entries.map((e) => e.task_id)).toEqual([later.task_id])
  expect((yield* s.pendingApprovals(globex, undefined, 10)).entries).toEqual([])
})

/** The index of calls waiting for a connection follows the records that are put, per tenant and provider. */
const connectionIndex = Effect.gen(function*() {
  const s = yield* store
  const tenant = `cx${Math.random().toString(36).slice(2, 8)}` as TenantId
  const waitingTask = (session: string, provider: string, since: string): Task => {
    const t = task(session, "w")
    return {
      ...t,
      status: "waiting",
      steps: [{
        ...t.steps[0]!,
        status: "waiting_connection",
        connection: { provider, reason: "missing", requested_at: since, expires_at: "2024-05-02T10:00:00.000Z" }
      }]
    }
  }
  const slackA = waitingTask("s1", "slack", "2024-05-01T10:00:01.000Z")
  const slackB = waitingTask("s2", "slack", "2024-05-01T10:00:02.000Z")
  const hubspot = waitingTask("s3", "hubspot", "2024-05-01T10:00:03.000Z")
  for (const t of [slackA, slackB, hubspot]) yield* s.put(tenant, record(t), { created: true })
  const waits = (provider: string) =>
    Effect.map(
      s.waitsOn(tenant, TaskStore.waitSubject.connection(provider)),
      (ws) => [...ws].sort((a, b) => a.since.localeCompare(b.since))
    )
  expect(yield* waits("slack")).toEqual([
    { task_id: slackA.task_id, step_id: "a", since: "2024-05-01T10:00:01.000Z" },
    { task_id: slackB.task_id, step_id: "a", since: "2024-05-01T10:00:02.000Z" }
  ])
  expect((yield* waits("hubspot")).map((w) => w.task_id)).toEqual([hubspot.task_id])
  // running again (woken) or ended: out of the index; other tenants never see it
  yield* s.put(tenant, record({ ...slackA, status: "running", steps: [{ ...slackA.steps[0]!, status: "running" }] }))
  yield* s.put(tenant, record({ ...hubspot, status: "cancelled" }))
  expect((yield* waits("slack")).map((w) => w.task_id)).toEqual([slackB.task_id])
  expect(yield* waits("hubspot")).toEqual([])
  expect(yield* s.waitsOn(globex, TaskStore.waitSubject.connection("slack"))).toEqual([])
  // waiting again, since later: in the index again, with its new start
  yield* s.put(tenant, record(waitingTask("s1", "slack", "2024-05-01T10:00:09.000Z")))
  expect((yield* waits("slack")).map((w) => w.since)).toEqual([
    "2024-05-01T10:00:02.000Z",
    "2024-05-01T10:00:09.000Z"
  ])
})

/** The tenant's task list: newest first, by session or status, a page at a time, never another tenant's. */
const taskList = Effect.gen(function*() {
  const s = yield* store
  const tenant = `list${Math.random().toString(36).slice(2, 8)}` as TenantId
  const made = (session: string, n: number, status: Task["status"]): Task => ({
    ...task(session, `t${n}`),
    status,
    created_at: `2024-05-01T10:00:0${n}.000Z`
  })
  const tasks = [
    made("s1", 1, "succeeded"),
    made("s2", 2, "failed"),
    made("s1", 3, "running"),
    made("s2", 4, "succeeded"),
    made("s1", 5, "succeeded")
  ]
  // created out of order (two edges with a little clock skew): listed by creation time all the same
  for (const t of [tasks[0]!, tasks[2]!, tasks[1]!, tasks[3]!, tasks[4]!]) {
    yield* s.put(tenant, record(t), { created: true })
  }
  const ids = (page: TaskStore.TaskList | undefined) => page!.tasks.map((t) => t.task_id)
  expect(ids(yield* s.listTasks(tenant, { limit: 10 }))).toEqual(["s1.t5", "s2.t4", "s1.t3", "s2.t2", "s1.t1"])
  expect((yield* s.listTasks(tenant, { limit: 10 }))!.next).toBeUndefined()
  // a page at a time: the cursor goes on where the page stopped
  const first = yield* s.listTasks(tenant, { limit: 2 })
  expect(ids(first)).toEqual(["s1.t5", "s2.t4"])
  const second = yield* s.listTasks(tenant, { limit: 2, cursor: first!.next })
  expect(ids(second)).toEqual(["s1.t3", "s2.t2"])
  // a task created meanwhile does not shift the next page
  yield* s.put(tenant, record(made("s3", 6, "running")), { created: true })
  const third = yield* s.listTasks(tenant, { limit: 2, cursor: second!.next })
  expect(ids(third)).toEqual(["s1.t1"])
  expect(third!.next).toBeUndefined()
  // filters, and a record's latest status counts
  expect(ids(yield* s.listTasks(tenant, { limit: 10, sessionId: "s1" as SessionId }))).toEqual([
    "s1.t5",
    "s1.t3",
    "s1.t1"
  ])
  yield* s.put(tenant, record({ ...tasks[2]!, status: "failed" }))
  expect(ids(yield* s.listTasks(tenant, { limit: 10, status: "failed" }))).toEqual(["s1.t3", "s2.t2"])
  expect(ids(yield* s.listTasks(tenant, { limit: 10, status: "failed", sessionId: "s2" as SessionId }))).toEqual([
    "s2.t2"
  ])
  // a cursor we never gave is refused, not read
  expect(yield* s.listTasks(tenant, { limit: 10, cursor: "bm90IGEgY3Vyc29y" })).toBeUndefined()
  // another tenant: nothing of these
  expect(ids(yield* s.listTasks(globex, { limit: 10 })).filter((id) => id.startsWith("s1.t"))).toEqual([])
})

/** A filter that matches little: a page reads at most `maxListScan` entries, and says where to go on. */
const boundedScan = Effect.gen(function*() {
  const s = yield* store
  const tenant = `scan${Math.random().toString(36).slice(2, 8)}` as TenantId
  const at = (n: number) => new Date(Date.UTC(2024, 4, 1) + n * 1000).toISOString()
  yield* s.put(tenant, record({ ...task("old", "x"), status: "failed", created_at: at(0) }), { created: true })
  for (let n = 1; n <= TaskStore.maxListScan + 10; n++) {
    yield* s.put(tenant, record({ ...task("new", `n${n}`), status: "succeeded", created_at: at(n) }), { created: true })
  }
  const first = yield* s.listTasks(tenant, { limit: 5, status: "failed" })
  expect(first!.tasks).toEqual([])
  expect(first!.next).toBeDefined()
  const second = yield* s.listTasks(tenant, { limit: 5, status: "failed", cursor: first!.next })
  expect(second!.tasks.map((t) => t.task_id)).toEqual(["old.x"])
  expect(second!.next).toBeUndefined()
})

/** A write carries the task's events: they are in its log once the write is done, in order, and in no other task's. */
const carriedEvents = Effect.gen(function*() {
  const s = yield* store
  const log = yield* EventLog.EventLog
  const session = `e${Math.random().toString(36).slice(2, 8)}` as SessionId
  const t = task(session, "a")
  const at = t.updated_at
  yield* s.put(acme, record(t), {
    created: true,
    events: [{ type: "task.queued", task_id: t.task_id, at }, { type: "task.started", task_id: t.task_id, at }]
  })
  const done = { ...t, status: "succeeded" as const, output: "ok", updated_at: "2024-05-01T10:00:01.000Z" }
  yield* s.put(acme, record(done), {
    events: [{ type: "task.succeeded", task_id: t.task_id, at: done.updated_at, data: { output: "ok" } }]
  })
  const events = yield* log.read(acme, t.task_id)
  expect(events.map((e) => e.type)).toEqual(["task.queued", "task.started", "task.succeeded"])
  expect(events[2]).toMatchObject({ task_id: t.task_id, at: done.updated_at, data: { output: "ok" } })
  // ids increase, and resuming after one gives what followed it
  expect(new Set(events.map((e) => e.id)).size).toBe(3)
  expect((yield* log.read(acme, t.task_id, events[0]!.id)).map((e) => e.type)).toEqual([
    "task.started",
    "task.succeeded"
  ])
  // a write without events appends none; another tenant's log of the same task id is empty
  yield* s.put(acme, record({ ...done, updated_at: "2024-05-01T10:00:02.000Z" }))
  expect(yield* log.read(acme, t.task_id)).toHaveLength(3)
  expect(yield* log.read(globex, t.task_id)).toEqual([])
  // a follower (the SSE stream) sees the carried events and ends at the terminal one
  const followed = yield* Stream.runCollect(log.follow(acme, t.task_id))
  expect(Chunk.toReadonlyArray(followed).map((e) => e.type)).toEqual(["task.queued", "task.started", "task.succeeded"])
})

layer(cleanup(prefix), { excludeTestServices: true })("TaskStore", (it) => {
  it.effect("memory: a write carries its task's events into the task's log", () =>
    carriedEvents.pipe(Effect.provide(memoryStore)))

  it.effect("redis: a write carries its task's events into the task's log, in the same transaction", () =>
    Effect.gen(function*() {
      yield* carriedEvents.pipe(Effect.provide(redisStoreAndLog), Effect.scoped)
      // the log keeps its own retention (24 hours by default), whatever the record's
      const keys = yield* withClient((client) => client.keys(`${prefix}:t:acme:ev:*`))
      expect(keys.length).toBeGreaterThan(0)
      for (const key of keys) {
        const ttl = yield* withClient((client) => client.pttl(key))
        expect(ttl).toBeGreaterThan(23 * 3_600_000)
        expect(ttl).toBeLessThanOrEqual(24 * 3_600_000)
      }
    }))

  it.effect("memory: the index of calls waiting for approval", () => approvalIndex.pipe(Effect.provide(memoryStore)))

  it.effect("redis: the index of calls waiting for approval", () => approvalIndex.pipe(Effect.provide(redisStore)))

  it.effect("memory: the index of calls waiting for a connection", () =>
    connectionIndex.pipe(Effect.provide(memoryStore)))

  it.effect("redis: the index of calls waiting for a connection", () =>
    connectionIndex.pipe(Effect.provide(redisStore)))

  it.effect("memory: the tenant's task list", () => taskList.pipe(Effect.provide(memoryStore)))

  it.effect("redis: the tenant's task list", () => taskList.pipe(Effect.provide(redisStore)))

  it.effect("memory: a task list page reads a bounded part of the index", () =>
    boundedScan.pipe(Effect.provide(memoryStore)))

  it.effect("redis: a task list page reads a bounded part of the index", () =>
    boundedScan.pipe(Effect.provide(redisStore)))

  it.effect("memory: records, session lists and conversations", () => contract.pipe(Effect.provide(memoryStore)))

  it.effect("redis: records, session lists and conversations", () => contract.pipe(Effect.provide(redisStore)))

  it.effect("redis: an index write that fails is sent again on its own, not with the record's events", () =>
    Effect.gen(function*() {
      const s = yield* store
      const log = yield* EventLog.EventLog
      const tenant = `bad${Math.random().toString(36).slice(2, 8)}` as TenantId
      // the tenant's approval index is, for a moment, a key of another type: its ZADD fails (WRONGTYPE)
      const index = `${prefix}:t:${tenant}:approvals`
      yield* withClient((client) => client.set(index, "not a sorted set"))
      const t = task("ix", "w")
      const waiting: Task = {
        ...t,
        status: "waiting",
        steps: [{
          ...t.steps[0]!,
          status: "waiting_approval",
          approval: { input_hash: "cd".repeat(32), requested_at: t.updated_at, expires_at: "2024-05-02T10:00:00.000Z" }
        }]
      }
      const mended = yield* Effect.fork(
        Effect.zipRight(Effect.sleep("60 millis"), withClient((client) => client.del(index)))
      )
      yield* s.put(tenant, record(waiting), {
        created: true,
        events: [{ type: "approval.requested", task_id: waiting.task_id, at: waiting.updated_at, step_id: "a" }]
      })
      yield* Fiber.join(mended)
      // the record and its event once; the index written by the retry
      expect((yield* log.read(tenant, waiting.task_id)).map((e) => e.type)).toEqual(["approval.requested"])
      expect((yield* s.pendingApprovals(tenant, undefined, 10)).entries.map((e) => e.task_id)).toEqual([
        waiting.task_id
      ])
      expect(Option.getOrThrow(yield* s.get(tenant, waiting.task_id)).task.status).toBe("waiting")
    }).pipe(Effect.provide(redisStoreAndLog), Effect.scoped))

  it.effect("redis: what one connection wrote, a new one reads; keys carry the TTL and reads refresh it", () =>
    Effect.gen(function*() {
      const t = task("trip", "a")
      yield* Effect.flatMap(store, (s) => s.put(acme, record(t), { created: true })).pipe(Effect.provide(redisStore))
      const loaded = yield* Effect.flatMap(store, (s) => s.get(acme, t.task_id)).pipe(Effect.provide(redisStore))
      expect(Option.getOrThrow(loaded)).toEqual(record(t))
      const key = recordKey(acme, "trip", t.task_id)
      yield* withClient((client) => client.pexpire(key, 1_000))
      yield* Effect.flatMap(store, (s) => s.get(acme, t.task_id)).pipe(Effect.provide(redisStore))
      expect(yield* withClient((client) => client.pttl(key))).toBeGreaterThan(ttlMs - 5_000)
      // a waiting task is kept as long as the longest wait (35 days), written or read
      const waiting = { ...task("trip", "w"), status: "waiting" as const }
      yield* Effect.flatMap(store, (s) => s.put(acme, record(waiting), { created: true })).pipe(
        Effect.provide(redisStore)
      )
      const waitingKey = recordKey(acme, "trip", waiting.task_id)
      expect(yield* withClient((client) => client.pttl(waitingKey))).toBeGreaterThan(34 * 86_400_000)
      yield* Effect.flatMap(store, (s) => s.get(acme, waiting.task_id)).pipe(Effect.provide(redisStore))
      expect(yield* withClient((client) => client.pttl(waitingKey))).toBeGreaterThan(34 * 86_400_000)
    }))

  it.effect("redis: a task's write costs the same at the 300th task of a session as at the 10th", () =>
    Effect.gen(function*() {
      const s = yield* store
      const { client } = yield* Redis
      const info = (yield* Effect.promise(() => client.client("INFO"))) as string
      const address = /addr=(\S+)/.exec(info)![1]!
      // MONITOR on another connection, keeping what the store's connection sends and how many bytes
      const monitor = yield* Effect.acquireRelease(
        withClient((c) => c.monitor()),
        (m) => Effect.sync(() => m.disconnect())
      )
      let seen: Array<{ command: string; bytes: number }> = []
      let markerSeen = () => {}
      monitor.on("monitor", (_time: string, args: Array<string>, source: string) => {
        if (source === address) {
          seen.push({ command: args[0]!.toLowerCase(), bytes: args.reduce((n, a) => n + Buffer.byteLength(a), 0) })
          if (args[0]!.toLowerCase() === "ping") markerSeen()
        }
      })
      const sent = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          seen = []
          yield* effect
          // a marker on the same connection: once MONITOR shows it, it has shown everything before it
          const marker = new Promise<void>((resolve) => (markerSeen = resolve))
          yield* Effect.promise(() => client.ping("marker"))
          yield* Effect.promise(() => marker)
          return seen.slice(0, seen.findIndex((c) => c.command === "ping"))
        })
      const lifecycle = (i: number) =>
        Effect.gen(function*() {
          const t = task("long", `t${i}`)
          const created = yield* sent(s.put(acme, record(t), { created: true }))
          const running = yield* sent(s.put(acme, record({ ...t, steps: [{ ...t.steps[0]!, attempts: 2 }] })))
          // the end, with the task's exchange joining the conversation
          const done = yield* sent(s.put(acme, record({ ...t, status: "succeeded", output: { n: i } }), {
            messages: [{ role: "user", content: `q${i}` }, { role: "assistant", content: `a${i}` }]
          }))
          return [...created, ...running, ...done]
        })
      const tenth = yield* Effect.gen(function*() {
        let at10: Array<{ command: string; bytes: number }> = []
        for (let i = 1; i <= 300; i++) {
          const commands = yield* lifecycle(i)
          if (i === 10) at10 = commands
          if (i === 300) return { at10, at300: commands }
        }
        return { at10, at300: at10 }
      })
      expect(tenth.at300.map((c) => c.command)).toEqual(tenth.at10.map((c) => c.command))
      expect(tenth.at10.map((c) => c.command)).toEqual([
        ...["multi", "set", "rpush", "pexpire", "hset", "pexpire", "exec"],
        // the tenant's task index (another slot), capped by rank: as cheap at the 300th as at the 10th
        ...["multi", "zadd", "zremrangebyrank", "pexpire", "exec"],
        ...["multi", "set", "hset", "pexpire", "exec"],
        ...["multi", "set", "rpush", "pexpire", "hset", "pexpire", "exec"]
      ])
      const bytes = (cs: ReadonlyArray<{ bytes: number }>) => cs.reduce((n, c) => n + c.bytes, 0)
      // the same up to the digits of the ids
      expect(Math.abs(bytes(tenth.at300) - bytes(tenth.at10))).toBeLessThan(20)
    }).pipe(Effect.scoped, Effect.provide(redisStore)))

  it.effect("redis: a record that does not decode is a defect, never an absent task nor an outage to wait out", () =>
    Effect.gen(function*() {
      const key = recordKey(acme, "corrupt", "corrupt.a")
      yield* withClient((client) => client.set(key, "{\"not\": \"a task\"}", "PX", 60_000))
      const exit = yield* Effect.exit(Effect.flatMap(store, (s) => s.get(acme, "corrupt.a" as TaskId)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause)).toContain("does not decode")
      expect(yield* withClient((client) => client.get(key))).toBe("{\"not\": \"a task\"}")
    }).pipe(Effect.provide(redisStore)))

  it.effect(
    "redis: a lost connection, once back, runs what was registered to rewrite state",
    () =>
      Effect.gen(function*() {
        const s = yield* store
        let reconnects = 0
        let lost = 0
        const before = Date.now()
        const reconnected = yield* Deferred.make<void>()
        yield* s.onReconnect((lostAt) =>
          Effect.zipRight(Effect.sync(() => void (reconnects++, lost = lostAt)), Deferred.succeed(reconnected, void 0))
        )
        // the server drops the store's connection; ioredis reconnects by itself
        yield* withClient(async (client) => {
          const list = (await client.client("LIST")) as string
          const ids = list.split("\n").filter((l) => l.includes(" name=altan-taskstore-test ")).map((l) =>
            /id=(\d+)/.exec(l)![1]!
          )
          for (const id of ids) await client.client("KILL", "ID", id)
        })
        yield* Deferred.await(reconnected)
        expect(reconnects).toBe(1)
        expect(lost).toBeGreaterThanOrEqual(before)
        // and the store works again
        yield* s.put(acme, record(task("back", "a")), { created: true })
        expect(Option.isSome(yield* s.get(acme, "back.a" as TaskId))).toBe(true)
      }).pipe(Effect.scoped, Effect.provide(redisStore)),
    { timeout: 15_000 }
  )
})
