import { sessionOfTask, type TaskId, type TenantId } from "@altan/domain/Ids"
import { TaskEvent, type TaskEventType } from "@altan/domain/Task"
import { attempt, checkPrefix, Redis, RedisError, ttlMillis } from "@altan/redis/Redis"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { eventLogKey } from "./internal/redisKeys.js"

/**
 * Per-task append-only logs of progress events, with their own retention (a task's events outlive neither
 * `maxLen` newer events nor `ttl` without appends). Event ids are opaque strings that increase within a log;
 * pass one back as `after` (an SSE `Last-Event-ID`) to resume. An id the log cannot read is taken as "from the
 * start": a client gets events twice rather than misses some.
 */
export class EventLog extends Context.Tag("@altan/agent/EventLog")<EventLog, {
  /** Appends an event and returns it with its id. */
  readonly append: (
    tenantId: TenantId,
    taskId: TaskId,
    event: EventBody
  ) => Effect.Effect<TaskEvent, RedisError>
  /** The events after `after` (all when absent), oldest first. */
  readonly read: (
    tenantId: TenantId,
    taskId: TaskId,
    after?: string
  ) => Effect.Effect<ReadonlyArray<TaskEvent>, RedisError>
  /**
   * The events after `after`, then new ones as they are appended; ends after a terminal event
   * (`task.succeeded`, `task.failed`, `task.cancelled`), at once if the log already holds one.
   */
  readonly follow: (tenantId: TenantId, taskId: TaskId, after?: string) => Stream.Stream<TaskEvent, RedisError>
}>() {}

const terminalTypes: ReadonlySet<TaskEventType> = new Set(["task.succeeded", "task.failed", "task.cancelled"])

/** Whether a follower stops after this event. */
export const isTerminal = (event: TaskEvent): boolean => terminalTypes.has(event.type)

/**
 * Change signals per log, held while someone follows it. A follower takes the current signal *before* it
 * reads, so an append landing between its read and its wait still wakes it.
 */
class Watchers<A> {
  readonly entries = new Map<string, { refs: number; next: Deferred.Deferred<void>; extra: A }>()

  retain(key: string, extra: () => A): { readonly added: boolean; readonly extra: A } {
    const entry = this.entries.get(key)
    if (entry) {
      entry.refs++
      return { added: false, extra: entry.extra }
    }
    const created = { refs: 1, next: Deferred.unsafeMake<void>(FiberId.none), extra: extra() }
    this.entries.set(key, created)
    return { added: true, extra: created.extra }
  }

  release(key: string): void {
    const entry = this.entries.get(key)
    if (entry && --entry.refs === 0) this.entries.delete(key)
  }

  signal(key: string): Deferred.Deferred<void> {
    return this.entries.get(key)!.next
  }

  fire(key: string): void {
    const entry = this.entries.get(key)
    if (!entry) return
    const fired = entry.next
    entry.next = Deferred.unsafeMake<void>(FiberId.none)
    Deferred.unsafeDone(fired, Exit.void)
  }
}

/** `follow` on top of a paged read and a signal per log; `watch` registers the follower for the stream's life. */
const makeFollow = <A>(options: {
  readonly watchers: Watchers<A>
  readonly key: string
  readonly after: string | undefined
  readonly watch: Effect.Effect<void, never, Scope.Scope>
  readonly read: (after: string | undefined) => Effect.Effect<ReadonlyArray<TaskEvent>, RedisError>
  /** The newest event of the log. */
  readonly last: Effect.Effect<Option.Option<TaskEvent>, RedisError>
  /** Read again after this long without a signal, in case one was lost. */
  readonly recheck?: Duration.DurationInput
}): Stream.Stream<TaskEvent, RedisError> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    yield* options.watch
    let cursor = options.after
    let ended = false
    let first = true
    const pull: Effect.Effect<Chunk.Chunk<TaskEvent>, Option.Option<RedisError>> = Effect.gen(function*() {
      if (ended) return yield* Effect.fail(Option.none())
      while (true) {
        const changed = options.watchers.signal(options.key)
        // Taken before the read: a terminal event that is already last with nothing after the cursor means the
        // client resumed after it, and nothing more will come.
        const finished = first && cursor !== undefined
          ? Option.exists(yield* Effect.mapError(options.last, Option.some), isTerminal)
          : false
        first = false
        const events = yield* Effect.mapError(options.read(cursor), Option.some)
        if (events.length === 0 && finished) return yield* Effect.fail(Option.none())
        if (events.length > 0) {
          const end = events.findIndex(isTerminal)
          const out = end >= 0 ? events.slice(0, end + 1) : events
          ended = end >= 0
          cursor = out[out.length - 1]!.id
          return Chunk.unsafeFromArray(out)
        }
        const wait = Deferred.await(changed)
        yield* options.recheck === undefined ? wait : Effect.timeoutOption(wait, options.recheck)
      }
    })
    return Stream.repeatEffectChunkOption(pull)
  }))

const logKey = (tenantId: TenantId, taskId: TaskId) => `${tenantId}/${taskId}`

/** Options of `layerMemory`. */
export interface MemoryOptions {
  /** Events kept per task; older ones are dropped. Default 1000. */
  readonly maxLen?: number
  /** Task logs kept; the least recently appended is dropped first. Default 10 000. */
  readonly maxTasks?: number
  /** A log without appends for this long is dropped. Default 24 hours. */
  readonly ttl?: Duration.DurationInput
}

/**
 * In-process logs, for the embedded runtime and tests. Bounded: `maxLen` events per task, `maxTasks` logs,
 * and logs idle for `ttl` are swept on the next append or read. Ids are one zero-padded counter per layer, so
 * an id is never reused, even by a log that was dropped and started again.
 */
export const layerMemory = (options?: MemoryOptions): Layer.Layer<EventLog> =>
  Layer.sync(EventLog, () => {
    const maxLen = Math.max(1, options?.maxLen ?? 1000)
    const maxTasks = Math.max(1, options?.maxTasks ?? 10_000)
    const ttl = ttlMillis(options?.ttl ?? Duration.hours(24))
    // Insertion order is append order (a log is moved to the end on append), so expired logs are at the front.
    const logs = new Map<string, { events: Array<TaskEvent>; expiresAt: number }>()
    const watchers = new Watchers<void>()
    let seq = 0

    const sweep = (now: number) => {
      for (const [key, log] of logs) {
        if (log.expiresAt > now && logs.size <= maxTasks) break
        logs.delete(key)
      }
    }
    const toSeq = (id: string | undefined) => {
      const n = id === undefined ? 0 : Number(id)
      return Number.isSafeInteger(n) && n >= 0 ? n : 0
    }
    const read = (key: string, after: string | undefined) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        sweep(now)
        const events = logs.get(key)?.events ?? []
        const from = toSeq(after)
        // Ids increase along the array: skip to the first one after `from`.
        let i = events.length
        while (i > 0 && Number(events[i - 1]!.id) > from) i--
        return events.slice(i)
      })

    return EventLog.of({
      append: (tenantId, taskId, event) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          sweep(now)
          const key = logKey(tenantId, taskId)
          const log = logs.get(key) ?? { events: [], expiresAt: 0 }
          const stored: TaskEvent = { id: String(++seq).padStart(16, "0"), ...event }
          log.events.push(stored)
          if (log.events.length > maxLen) log.events.splice(0, log.events.length - maxLen)
          log.expiresAt = now + ttl
          logs.delete(key)
          logs.set(key, log)
          sweep(now)
          watchers.fire(key)
          return stored
        }),
      read: (tenantId, taskId, after) => read(logKey(tenantId, taskId), after),
      follow: (tenantId, taskId, after) => {
        const key = logKey(tenantId, taskId)
        return makeFollow({
          watchers,
          key,
          after,
          watch: Effect.acquireRelease(
            Effect.sync(() => watchers.retain(key, () => undefined)),
            () => Effect.sync(() => watchers.release(key))
          ),
          read: (cursor) => read(key, cursor),
          last: Effect.sync(() => Option.fromNullable(logs.get(key)?.events.at(-1)))
        })
      }
    })
  })

/** An event as it is appended: its log gives it its id. */
export type EventBody = Omit<TaskEvent, "id">

/** How long a task's log is kept in Redis, and how many events: `TaskStore.layerRedis` appends with the same. */
export const redisRetention = { maxLen: 1000, ttl: Duration.hours(24) } as const

const EventBody = TaskEvent.omit("id")
/** An event as a Redis stream entry holds it (field `e`). */
export const encodeBody = Schema.encode(Schema.parseJson(EventBody))
const decodeBody = Schema.decodeUnknown(Schema.parseJson(EventBody))

/** Options of `layerRedis`. */
export interface RedisOptions {
  /** First segment of every key. Default `altan`. */
  readonly prefix?: string
  /** Events kept per task, approximately (`XADD MAXLEN ~`: Redis trims whole nodes). Default 1000. */
  readonly maxLen?: number
  /** A log without appends for this long is dropped by Redis. Default 24 hours. */
  readonly ttl?: Duration.DurationInput
  /** How long one `XREAD BLOCK` of the shared follower connection waits. Default 5 seconds. */
  readonly blockTime?: Duration.DurationInput
}

const streamId = /^(\d+)(?:-(\d+))?$/

/** Orders two stream ids; both must match `streamId`. */
const compareIds = (a: string, b: string): number => {
  const [, am, as = "0"] = streamId.exec(a)!
  const [, bm, bs = "0"] = streamId.exec(b)!
  return Number(am) - Number(bm) || Number(as) - Number(bs)
}

/**
 * A Redis stream per task, `<prefix>:t:<tenant>:ev:{<tenant>/<session>}:<task>`, whose entries hold the event
 * JSON in field `e`; event ids are the stream ids. An append is one `MULTI` of `XADD MAXLEN ~ n` and
 * `PEXPIRE ttl`, so a log never exists without its TTL.
 *
 * Followers do not get a connection each. The layer holds one extra connection that runs a single
 * `XREAD BLOCK` over every log being followed, and only wakes followers: each then reads its own range with
 * `XRANGE` on the shared connection, at its own pace, so a slow follower buffers nothing and holds up no one.
 * A follower joining adds its log to the next `XREAD`; the one in flight is cut short with `CLIENT UNBLOCK`
 * (or ends by itself after `blockTime`). An interrupted follower only unregisters; the connection is
 * disconnected when the layer's scope closes. Every followed key is in each `XREAD`, which is fine for
 * thousands of concurrently followed tasks per process; beyond that, shard followers over several connections.
 * On a Redis Cluster the keys of one `XREAD` must share a slot, so this needs a single Redis (or one
 * connection per slot).
 *
 * Redis failures are `RedisError`s of `append`, `read` and `follow`; the follower connection retries by itself.
 */
export const layerRedis = (options?: RedisOptions): Layer.Layer<EventLog, RedisError, Redis> =>
  Layer.scoped(
    EventLog,
    Effect.gen(function*() {
      const redis = yield* Redis
      const { client } = redis
      const prefix = yield* checkPrefix(options?.prefix ?? "altan")
      const maxLen = Math.max(1, Math.round(options?.maxLen ?? redisRetention.maxLen))
      const px = ttlMillis(options?.ttl ?? redisRetention.ttl)
      const blockMs = ttlMillis(options?.blockTime ?? Duration.seconds(5))
      const scope = yield* Effect.scope
      const key = (tenantId: TenantId, taskId: TaskId) => eventLogKey(prefix, tenantId, sessionOfTask(taskId), taskId)
      const run = attempt

      const decodeEntries = (key: string, entries: ReadonlyArray<[id: string, fields: Array<string>]>) =>
        Effect.forEach(entries, ([id, fields]) => {
          const i = fields.indexOf("e")
          return decodeBody(i >= 0 && i % 2 === 0 ? fields[i + 1] : undefined).pipe(
            Effect.map((body): TaskEvent => ({ id, ...body })),
            Effect.mapError((e) => new RedisError({ message: `event ${id} of ${key} does not decode: ${e.message}` }))
          )
        })
      const range = (key: string, after: string | undefined) =>
        Effect.flatMap(
          run("XRANGE", () => client.xrange(key, after !== undefined && streamId.test(after) ? `(${after}` : "-", "+")),
          (entries) => decodeEntries(key, entries)
        )
      const last = (key: string) =>
        Effect.flatMap(
          run("XREVRANGE", () => client.xrevrange(key, "+", "-", "COUNT", 1)),
          (entries) => Effect.map(decodeEntries(key, entries), (events) => Option.fromNullable(events[0]))
        )

      // Followed keys, each with the id the shared XREAD reads after.
      const watchers = new Watchers<{ cursor: string }>()
      const blocking = yield* redis.duplicate
      let blockedClientId: number | undefined
      // Set when a key is added; cleared when the loop builds its next XREAD.
      let stale = false
      let idle: Deferred.Deferred<void> | undefined

      const loop = Effect.gen(function*() {
        while (true) {
          if (watchers.entries.size === 0) {
            // Followers that joined and left before the next XREAD leave nothing to pick up: the kick stops.
            stale = false
            idle = Deferred.unsafeMake<void>(FiberId.none)
            yield* Deferred.await(idle)
            continue
          }
          stale = false
          const keys = [...watchers.entries.keys()]
          const ids = keys.map((k) => watchers.entries.get(k)!.extra.cursor)
          const result = yield* attempt("XREAD", () => {
            // Sent ahead of the XREAD on the same connection: the id is known before the read blocks.
            const id = blocking.client("ID").then((id) => void (blockedClientId = id as number))
            const read = blocking.xread("COUNT", 100, "BLOCK", blockMs, "STREAMS", ...keys, ...ids)
            return Promise.all([id, read]).then(([, read]) => read)
          }).pipe(
            Effect.catchAll((e) =>
              Effect.as(Effect.zipRight(Effect.logWarning(e.message), Effect.sleep("1 second")), null)
            )
          )
          for (const [key, entries] of result ?? []) {
            const entry = watchers.entries.get(key)
            const newest = entries[entries.length - 1]?.[0]
            if (entry && newest && compareIds(newest, entry.extra.cursor) > 0) entry.extra.cursor = newest
            watchers.fire(key)
          }
        }
      })
      yield* Effect.forkScoped(loop)

      // Cuts the XREAD in flight short until the loop has picked up the new keys.
      let kicking = false
      const kick = Effect.gen(function*() {
        while (stale) {
          if (blockedClientId !== undefined) {
            const id = blockedClientId
            yield* attempt("CLIENT UNBLOCK", () => client.client("UNBLOCK", id)).pipe(Effect.ignore)
          }
          yield* Effect.sleep("5 millis")
        }
      }).pipe(Effect.ensuring(Effect.sync(() => void (kicking = false))))

      const watch = (key: string, after: string | undefined) =>
        Effect.acquireRelease(
          Effect.gen(function*() {
            const from = after !== undefined && streamId.test(after) ? after : "0-0"
            const { added, extra } = watchers.retain(key, () => ({ cursor: from }))
            // The shared read must start no later than this follower's first read, or it could miss a wake-up.
            if (!added && compareIds(from, extra.cursor) < 0) extra.cursor = from
            else if (!added) return
            stale = true
            if (idle) Deferred.unsafeDone(idle, Exit.void)
            if (!kicking) {
              kicking = true
              // Forked from an acquire, which is uninterruptible: the kick must stay interruptible for the scope's close.
              yield* Effect.forkIn(Effect.interruptible(kick), scope)
            }
          }),
          () => Effect.sync(() => watchers.release(key))
        )

      return EventLog.of({
        append: (tenantId, taskId, event) =>
          Effect.gen(function*() {
            const json = yield* encodeBody(event).pipe(
              Effect.mapError((e) =>
                new RedisError({ message: `cannot encode a ${event.type} event of task ${taskId}: ${e.message}` })
              )
            )
            const k = key(tenantId, taskId)
            const id = yield* run("append event", async () => {
              const results = await client.multi()
                .xadd(k, "MAXLEN", "~", maxLen, "*", "e", json)
                .pexpire(k, px)
                .exec()
              if (results === null) {
                throw new Error("transaction aborted")
              }
              for (const [error] of results) if (error) throw error
              return results[0]![1] as string
            })
            return { id, ...event }
          }),
        read: (tenantId, taskId, after) => range(key(tenantId, taskId), after),
        follow: (tenantId, taskId, after) => {
          const k = key(tenantId, taskId)
          return makeFollow({
            watchers,
            key: k,
            after,
            watch: watch(k, after),
            read: (cursor) => range(k, cursor),
            last: last(k),
            recheck: Duration.times(Duration.millis(blockMs), 6)
          })
        }
      })
    })
  )
