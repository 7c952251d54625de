import { SessionId, sessionOfTask, type TaskId, type TenantId } from "@altan/domain/Ids"
import { Task } from "@altan/domain/Task"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { ChainableCommander } from "ioredis"
import { attempt, checkPrefix, Redis, sessionTag, ttlMillis } from "./Redis.js"

/** Everything a session remembers: its tasks, conversation and variables. */
export const SessionState = Schema.Struct({
  session_id: SessionId,
  tasks: Schema.Record({ key: Schema.String, value: Task }),
  task_ids: Schema.Array(Schema.String),
  messages: Schema.Array(Schema.Unknown),
  variables: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  updated_at: Schema.String
})
export type SessionState = typeof SessionState.Type

/** Where session state lives between activations of its `AgentSession`. */
export class SessionStore extends Context.Tag("@altan/agent/SessionStore")<SessionStore, {
  readonly load: (tenantId: TenantId, sessionId: SessionId) => Effect.Effect<Option.Option<SessionState>>
  readonly save: (tenantId: TenantId, state: SessionState) => Effect.Effect<void>
  /** The session holding a task, among this tenant's sessions only: another tenant's task is never found. */
  readonly findTask: (tenantId: TenantId, taskId: TaskId) => Effect.Effect<Option.Option<SessionId>>
}>() {}

const key = (tenantId: TenantId, sessionId: string) => `${tenantId}/${sessionId}`

/**
 * In-process storage: the embedded default and unit tests. The agent replaces state objects rather
 * than mutating them, so holding the reference is as good as a copy.
 */
export const layerMemory: Layer.Layer<SessionStore> = Layer.sync(SessionStore, () => {
  const sessions = new Map<string, SessionState>()
  return {
    load: (tenantId, sessionId) => Effect.sync(() => Option.fromNullable(sessions.get(key(tenantId, sessionId)))),
    save: (tenantId, state) => Effect.sync(() => void sessions.set(key(tenantId, state.session_id), state)),
    // A task id names its session, so the state itself is the index.
    findTask: (tenantId, taskId) =>
      Effect.sync(() => {
        if (taskId.lastIndexOf(".") <= 0) return Option.none()
        const sessionId = sessionOfTask(taskId)
        const state = sessions.get(key(tenantId, sessionId))
        return state && Object.hasOwn(state.tasks, taskId) ? Option.some(sessionId) : Option.none()
      })
  }
})

/** Options of `layerRedis`. */
export interface RedisOptions {
  /** First segment of every key, so deployments (or test runs) can share a Redis. Default `altan`. */
  readonly prefix?: string
  /** A session neither loaded nor saved for this long is dropped by Redis. Default 7 days. */
  readonly ttl?: Duration.DurationInput
}

/** Sessions whose task index this layer instance has written, for the first `maxIndexed` sessions touched. */
const maxIndexed = 10_000

const stateJson = Schema.parseJson(SessionState)
const encodeState = Schema.encode(stateJson)
const decodeState = Schema.decodeUnknown(stateJson)

/**
 * Session state in Redis, one JSON string per session, plus a per-tenant task index:
 *
 * - `<prefix>:t:<tenant>:s:{<tenant>/<session>}` = `SessionState` JSON
 * - `<prefix>:t:<tenant>:task:{<tenant>/<session>}:<task>` = session id
 *
 * The `{tenant/session}` hash tag keeps a session's keys in one Cluster slot. A save is one `MULTI` (the state
 * and the index entries of tasks it has not indexed yet, all with `PX ttl`); a load is one `GETEX ... PX ttl`,
 * so a session lives `ttl` after its last use. Index entries are rewritten by the first save of each
 * activation, and `findTask` falls back to the state on a miss (and repairs the entry), so an index entry
 * that expired before its session never hides a task.
 *
 * A stored value that does not decode is a defect, not an absent session: treating it as absent would let the
 * next save overwrite whatever it holds. Redis failures are defects too (the interface has no error channel):
 * the entity message that needed the store fails, and the caller sees it.
 */
export const layerRedis = (options?: RedisOptions): Layer.Layer<SessionStore, never, Redis> =>
  Layer.effect(
    SessionStore,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const prefix = yield* checkPrefix(options?.prefix ?? "altan")
      const px = ttlMillis(options?.ttl ?? Duration.days(7))
      const stateKey = (tenantId: TenantId, sessionId: string) =>
        `${prefix}:t:${tenantId}:s:${sessionTag(tenantId, sessionId)}`
      const taskKey = (tenantId: TenantId, sessionId: string, taskId: string) =>
        `${prefix}:t:${tenantId}:task:${sessionTag(tenantId, sessionId)}:${taskId}`

      // Task ids already in the index, per session key; least recently saved sessions are forgotten first.
      const indexed = new Map<string, Set<string>>()
      const remember = (key: string, taskIds: Iterable<string>) => {
        const ids = indexed.get(key) ?? new Set<string>()
        for (const id of taskIds) ids.add(id)
        indexed.delete(key)
        indexed.set(key, ids)
        if (indexed.size > maxIndexed) indexed.delete(indexed.keys().next().value!)
      }

      const run = <A>(operation: string, f: () => Promise<A>) => Effect.orDie(attempt(operation, f))
      const exec = (operation: string, multi: ChainableCommander) =>
        run(operation, async () => {
          const results = await multi.exec()
          if (results === null) throw new Error("transaction aborted")
          for (const [error] of results) if (error) throw error
          return results.map(([, value]) => value)
        })

      const decode = (key: string, sessionId: SessionId, raw: string) =>
        decodeState(raw).pipe(
          Effect.catchTag(
            "ParseError",
            (e) =>
              Effect.dieMessage(
                `session state at ${key} does not decode (refusing to treat it as absent): ${e.message}`
              )
          ),
          Effect.filterOrDieMessage(
            (state) => state.session_id === sessionId,
            `session state at ${key} belongs to another session`
          )
        )

      return SessionStore.of({
        load: (tenantId, sessionId) =>
          Effect.gen(function*() {
            const key = stateKey(tenantId, sessionId)
            // A new activation: its first save rewrites the index, refreshing the entries' TTL.
            indexed.delete(key)
            const raw = yield* run("GETEX", () => client.getex(key, "PX", px))
            return raw === null ? Option.none() : Option.some(yield* decode(key, sessionId, raw))
          }),

        save: (tenantId, state) =>
          Effect.gen(function*() {
            const json = yield* encodeState(state).pipe(
              Effect.catchTag(
                "ParseError",
                (e) => Effect.dieMessage(`cannot encode the state of session ${state.session_id}: ${e.message}`)
              )
            )
            const key = stateKey(tenantId, state.session_id)
            const known = indexed.get(key)
            const fresh = Object.keys(state.tasks).filter((id) => !known?.has(id))
            const multi = client.multi().set(key, json, "PX", px)
            for (const id of fresh) multi.set(taskKey(tenantId, state.session_id, id), state.session_id, "PX", px)
            yield* exec("save session", multi)
            remember(key, fresh)
          }),

        findTask: (tenantId, taskId) =>
          Effect.gen(function*() {
            if (taskId.lastIndexOf(".") <= 0) return Option.none()
            const sessionId = sessionOfTask(taskId)
            const indexKey = taskKey(tenantId, sessionId, taskId)
            const hit = yield* run("GET", () => client.get(indexKey))
            if (hit !== null) return Option.some(hit as SessionId)
            const key = stateKey(tenantId, sessionId)
            const [raw, expiresAt] = (yield* exec("find task", client.multi().get(key).pexpiretime(key))) as [
              string | null,
              number
            ]
            if (raw === null) return Option.none()
            const state = yield* decode(key, sessionId, raw)
            if (!Object.hasOwn(state.tasks, taskId)) return Option.none()
            // Repaired with the session's own expiry time: an index entry never outlives its session.
            if (expiresAt > 0) yield* run("SET", () => client.set(indexKey, sessionId, "PXAT", expiresAt))
            return Option.some(sessionId)
          })
      })
    })
  )
