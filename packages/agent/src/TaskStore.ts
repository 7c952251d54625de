import type { PendingApproval } from "@altan/domain/Approval"
import { Unavailable } from "@altan/domain/Errors"
import type { SessionId, TaskId, TenantId } from "@altan/domain/Ids"
import { ChatMessage } from "@altan/domain/Llm"
import { OnUnknownOutcome } from "@altan/domain/Settings"
import { isTerminal, llmTurnWaits, Task, type TaskStatus } from "@altan/domain/Task"
import { ToolSpec } from "@altan/domain/ToolDefinition"
import type { RedisError } from "@altan/redis/Redis"
import { attempt, checkPrefix, Redis, ttlMillis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { messageSize, trimHistory } from "./Conversation.js"
import { encodeBody, type EventBody, EventLog, redisRetention } from "./EventLog.js"
import { eventLogKey, sessionTag } from "./internal/redisKeys.js"

/** A task as stored: what the API shows of it, and what running (or resuming) it needs. */
export const TaskRecord = Schema.Struct({
  task: Task,
  /** The specs of a plan's tools, as the edge checked the plan against them. */
  specs: Schema.optional(Schema.Array(ToolSpec)),
  /** What a step with an unknown outcome does (the tenant's setting when the task was accepted). */
  on_unknown_outcome: Schema.optional(OnUnknownOutcome),
  /** The agent loop's exchange so far (natural-language tasks), so a resumed task goes on where it was. */
  transcript: Schema.optional(Schema.Array(ChatMessage)),
  /** How long a call waits for its approval, in ms (the tenant's `approval_timeout` when the task was accepted). */
  approval_timeout_ms: Schema.optional(Schema.Int),
  /** How long a call waits for a missing connection, in ms (the tenant's `connection_timeout`; 0: not at all). */
  connection_timeout_ms: Schema.optional(Schema.Int),
  /** Where an OAuth2 consent the task asks for returns (the callback of the edge that accepted it). */
  oauth_redirect_uri: Schema.optional(Schema.String)
})
export type TaskRecord = typeof TaskRecord.Type

/** What `GET /v1/sessions/{id}` shows of a session. */
export interface SessionSummary {
  readonly task_ids: ReadonlyArray<TaskId>
  readonly message_count: number
  readonly updated_at: string
}

/**
 * Where a session's tasks and conversation live. Every write is small and independent of the session's history:
 * a task's record is its own entry, rewritten whole on each of its transitions (so any later write of a task also
 * restores an earlier one a crashed server lost); a session's task list and conversation are appended to.
 */
export class TaskStore extends Context.Tag("@altan/agent/TaskStore")<TaskStore, {
  readonly get: (tenantId: TenantId, taskId: TaskId) => Effect.Effect<Option.Option<TaskRecord>, RedisError>
  /**
   * Writes a task's record; `created` also appends the task to its session's list, `messages` to its session's
   * conversation, `events` to the task's `EventLog`, in the same step (a task's exchange joins the conversation exactly
   * when its end is recorded; an event is in the log exactly when the change it tells of is recorded).
   */
  readonly put: (
    tenantId: TenantId,
    record: TaskRecord,
    options?: {
      readonly created?: boolean
      readonly messages?: ReadonlyArray<ChatMessage>
      readonly events?: ReadonlyArray<EventBody>
    }
  ) => Effect.Effect<void, RedisError>
  /**
   * The tenant's calls waiting for approval, oldest request first, `limit` at most after `after` (a cursor from the
   * previous page). An index kept beside the records by `put`; an entry whose record no longer waits is skipped.
   */
  readonly pendingApprovals: (
    tenantId: TenantId,
    after: string | undefined,
    limit: number
  ) => Effect.Effect<{ readonly entries: ReadonlyArray<PendingApproval>; readonly next?: string }, RedisError>
  /**
   * The tenant's calls waiting on `subject` (see `waitSubject`): its connection to a provider, or its spent budgets.
   * An index kept beside the records by `put`, like the approvals'.
   */
  readonly waitsOn: (tenantId: TenantId, subject: string) => Effect.Effect<ReadonlyArray<Wait>, RedisError>
  /**
   * The tenant's tasks, newest first (by creation), of one session or status if asked: at most `limit`, and `next`
   * (the cursor of the following page) while more may follow. A page reads at most `maxListScan` index entries, so a
   * filter that matches little answers a short page with a `next` rather than scanning the whole index. A cursor
   * that is not one of ours is `undefined` (the caller's 400).
   */
  readonly listTasks: (tenantId: TenantId, query: TaskListQuery) => Effect.Effect<TaskList | undefined, RedisError>
  /** The most recent part of the conversation that fits in `budget` characters (see `trimHistory`). */
  readonly recentMessages: (
    tenantId: TenantId,
    sessionId: SessionId,
    budget: number
  ) => Effect.Effect<ReadonlyArray<ChatMessage>, RedisError>
  /** The session's summary; none when it never had a task nor a message. */
  readonly summary: (
    tenantId: TenantId,
    sessionId: SessionId
  ) => Effect.Effect<Option.Option<SessionSummary>, RedisError>
  /** Forgets the session's conversation; its tasks stay. */
  readonly resetMessages: (tenantId: TenantId, sessionId: SessionId, at: string) => Effect.Effect<void, RedisError>
  /**
   * Runs `f` (with when the connection was lost) whenever the store's connection is back after it was lost, for the
   * life of the scope: what the server acknowledged just before it crashed may be gone, and the caller rewrites what
   * it wrote then.
   */
  readonly onReconnect: (f: (lostAt: number) => Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
  /** Runs `f` (with when) whenever the store's connection is lost, for the life of the scope (see `onReconnect`). */
  readonly onDisconnect: (f: (lostAt: number) => Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
}>() {}

const sessionKey = (tenantId: TenantId, sessionId: string) => `${tenantId}/${sessionId}`

/** The answer to a read the task storage cannot serve now: a 503 to retry. */
export const unavailable = (e: RedisError) =>
  new Unavailable({ message: `task storage cannot be read right now; retry later (${e.message})` })

/**
 * A call waiting for something of its tenant's (a connection, a budget): its task and step (`llm` for the model's next
 * turn), and since when (its wait's `requested_at`).
 */
export interface Wait {
  readonly task_id: TaskId
  readonly step_id: string
  readonly since: string
}

/** What a wait is on: the tenant's connection to `provider`, or its budgets (any of them). */
export const waitSubject = {
  connection: (provider: string) => `connection:${provider}`,
  budget: "budget"
} as const

/** What `listTasks` is asked. */
export interface TaskListQuery {
  readonly sessionId?: SessionId | undefined
  readonly status?: TaskStatus | undefined
  readonly cursor?: string | undefined
  readonly limit: number
}

/** A page of `listTasks`. */
export interface TaskList {
  readonly tasks: ReadonlyArray<Task>
  readonly next?: string
}

/** The longest a task waits (a month's budget reset, a 30-day `connection_timeout`), with a margin. */
const maxWaitMs = 35 * 86_400_000

/** Index entries a page of `listTasks` reads at most. */
export const maxListScan = 1_000

/** Index entries kept per tenant (the oldest go first); a task past them is still readable by its id. */
export const maxListed = 100_000

/** A task's entry in its tenant's index: its creation time then its id, so the index sorts by creation. */
const listEntry = (task: Task) => `${task.created_at}/${task.task_id}`
const taskOfEntry = (entry: string) => entry.slice(entry.indexOf("/") + 1) as TaskId
const encodeCursor = (entry: string) => Buffer.from(entry).toString("base64url")
const decodeCursor = (cursor: string): string | undefined => {
  const entry = Buffer.from(cursor, "base64url").toString()
  return /^\d{4}-\d\d-\d\dT[^/]+\/[^/]+$/.test(entry) ? entry : undefined
}
const matches = (query: TaskListQuery) => (task: Task) =>
  (query.sessionId === undefined || task.session_id === query.sessionId) &&
  (query.status === undefined || task.status === query.status)

/**
 * Collects a page from index entries read newest first, `read` answering a batch's records (or none for one gone):
 * stops at `limit` matches or `maxListScan` entries.
 */
const collectPage = <E>(
  query: TaskListQuery,
  batch: (before: string | undefined, size: number) => Effect.Effect<ReadonlyArray<string>, E>,
  read: (entries: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Task | undefined>, E>
): Effect.Effect<TaskList | undefined, E> =>
  Effect.gen(function*() {
    let before: string | undefined
    if (query.cursor !== undefined) {
      before = decodeCursor(query.cursor)
      if (before === undefined) return undefined
    }
    const found: Array<Task> = []
    const keep = matches(query)
    let scanned = 0
    while (scanned < maxListScan) {
      const entries = yield* batch(before, Math.min(100, maxListScan - scanned))
      if (entries.length === 0) return { tasks: found }
      const records = yield* read(entries)
      for (let i = 0; i < entries.length; i++) {
        scanned++
        before = entries[i]!
        const task = records[i]
        if (task !== undefined && keep(task)) found.push(task)
        if (found.length === query.limit) return { tasks: found, next: encodeCursor(before) }
      }
    }
    return { tasks: found, next: encodeCursor(before!) }
  })

/**
 * The index entries of a record's calls: one per step that waits for approval (its key orders by request time), and
 * the keys of the task's other approval steps, which must not be in the index.
 */
const approvalEntries = (record: TaskRecord) => {
  const waiting: Array<readonly [string, PendingApproval]> = []
  const settled: Array<string> = []
  for (const step of record.task.steps) {
    if (step.approval === undefined) continue
    const key = `${step.approval.requested_at}/${record.task.task_id}/${step.id}`
    if (step.status === "waiting_approval" && !isTerminal(record.task.status)) {
      waiting.push([key, {
        task_id: record.task.task_id,
        session_id: record.task.session_id,
        step_id: step.id,
        tool: step.tool,
        input: step.input,
        input_hash: step.approval.input_hash,
        requested_at: step.approval.requested_at,
        expires_at: step.approval.expires_at,
        ...(record.task.user_id ? { user_id: record.task.user_id } : {})
      }])
    } else {
      settled.push(key)
    }
  }
  return { waiting, settled }
}

/** The index entries of a record's waits, by subject: the calls waiting, and those that did before and no longer do. */
const waitEntries = (record: TaskRecord) => {
  const waiting: Array<readonly [string, string, Wait]> = []
  const settled: Array<readonly [string, string]> = []
  const { task } = record
  const ended = isTerminal(task.status)
  const add = (subject: string, stepId: string, since: string, waits: boolean) => {
    const key = `${task.task_id}/${stepId}`
    if (waits && !ended) waiting.push([subject, key, { task_id: task.task_id, step_id: stepId, since }])
    else settled.push([subject, key])
  }
  for (const step of task.steps) {
    if (step.connection !== undefined) {
      add(
        waitSubject.connection(step.connection.provider),
        step.id,
        step.connection.requested_at,
        step.status === "waiting_connection"
      )
    }
    if (step.budget !== undefined) {
      add(waitSubject.budget, step.id, step.budget.requested_at, step.status === "waiting_budget")
    }
  }
  if (task.budget_wait !== undefined) add(waitSubject.budget, "llm", task.budget_wait.requested_at, llmTurnWaits(task))
  return { waiting, settled }
}

/** Options of `layerMemory`. */
export interface MemoryOptions {
  /** Task records kept; the oldest are dropped first. Default 100 000. */
  readonly maxTasks?: number
  /** Sessions (task lists and conversations) kept; the least recently used are dropped first. Default 100 000. */
  readonly maxSessions?: number
}

/**
 * In-process storage: the embedded default and unit tests. Records are replaced, never mutated, so holding the
 * reference is as good as a copy. Bounded by `maxTasks` records and `maxSessions` sessions. Events go to the
 * (in-process) `EventLog` it is given.
 */
export const layerMemory = (options?: MemoryOptions): Layer.Layer<TaskStore, never, EventLog> =>
  Layer.effect(
    TaskStore,
    Effect.gen(function*() {
      const eventLog = yield* EventLog
      const maxTasks = Math.max(1, options?.maxTasks ?? 100_000)
      const maxSessions = Math.max(1, options?.maxSessions ?? 100_000)
      const tasks = new Map<string, TaskRecord>()
      const sessions = new Map<string, { task_ids: Array<TaskId>; messages: Array<ChatMessage>; updated_at: string }>()
      const approvals = new Map<TenantId, Map<string, PendingApproval>>()
      /** Per tenant and subject (`tenant\u0000subject`), the calls waiting on it. */
      const waits = new Map<string, Map<string, Wait>>()
      /** Per tenant, its index entries in order (see `listEntry`). */
      const listed = new Map<TenantId, Array<string>>()
      const index = (tenantId: TenantId, entry: string) => {
        let entries = listed.get(tenantId)
        if (!entries) listed.set(tenantId, entries = [])
        // creation times arrive in order but for clock skew between edges: the rare late one goes to its place
        if (entries.length === 0 || entries[entries.length - 1]! <= entry) entries.push(entry)
        else entries.splice(entries.findIndex((e) => e > entry), 0, entry)
        if (entries.length > maxListed) entries.shift()
      }
      const sessionOf = (tenantId: TenantId, sessionId: string, at: string) => {
        const key = sessionKey(tenantId, sessionId)
        let entry = sessions.get(key)
        if (entry) sessions.delete(key)
        else entry = { task_ids: [], messages: [], updated_at: at }
        // most recently used last: past `maxSessions` the least recently used go first
        sessions.set(key, entry)
        if (sessions.size > maxSessions) sessions.delete(sessions.keys().next().value!)
        entry.updated_at = at
        return entry
      }
      return TaskStore.of({
        get: (tenantId, taskId) => Effect.sync(() => Option.fromNullable(tasks.get(`${tenantId}/${taskId}`))),
        put: (tenantId, record, options) =>
          Effect.sync(() => {
            const key = `${tenantId}/${record.task.task_id}`
            tasks.set(key, record)
            const session = sessionOf(tenantId, record.task.session_id, record.task.updated_at)
            if (options?.created) {
              session.task_ids.push(record.task.task_id)
              index(tenantId, listEntry(record.task))
              if (tasks.size > maxTasks) tasks.delete(tasks.keys().next().value!)
            }
            if (options?.messages) session.messages.push(...options.messages)
            const { settled, waiting } = approvalEntries(record)
            if (waiting.length > 0 || settled.length > 0) {
              const index = approvals.get(tenantId) ?? new Map<string, PendingApproval>()
              approvals.set(tenantId, index)
              for (const key of settled) index.delete(key)
              for (const [key, entry] of waiting) index.set(key, entry)
            }
            const waitsOf = waitEntries(record)
            for (const [subject, key] of waitsOf.settled) waits.get(`${tenantId}\u0000${subject}`)?.delete(key)
            for (const [subject, key, entry] of waitsOf.waiting) {
              const index = waits.get(`${tenantId}\u0000${subject}`) ?? new Map<string, Wait>()
              waits.set(`${tenantId}\u0000${subject}`, index)
              index.set(key, entry)
            }
          }).pipe(
            Effect.zipRight(
              options?.events && options.events.length > 0
                ? Effect.forEach(options.events, (event) => eventLog.append(tenantId, record.task.task_id, event), {
                  discard: true
                })
                : Effect.void
            )
          ),
        waitsOn: (tenantId, subject) =>
          Effect.sync(() => [...(waits.get(`${tenantId}\u0000${subject}`)?.values() ?? [])]),
        pendingApprovals: (tenantId, after, limit) =>
          Effect.sync(() => {
            const keys = [...(approvals.get(tenantId)?.keys() ?? [])].filter((k) => after === undefined || k > after)
              .sort()
            const page = keys.slice(0, limit)
            const index = approvals.get(tenantId)
            return {
              entries: page.map((k) => index!.get(k)!),
              ...(keys.length > limit ? { next: page[page.length - 1]! } : {})
            }
          }),
        listTasks: (tenantId, query) =>
          collectPage(
            query,
            (before, size) =>
              Effect.sync(() => {
                const entries = listed.get(tenantId) ?? []
                // the position of the first entry not before the cursor: the page reads down from just below it
                let end = entries.length
                if (before !== undefined) {
                  let low = 0
                  while (low < end) {
                    const mid = (low + end) >> 1
                    if (entries[mid]! < before) low = mid + 1
                    else end = mid
                  }
                }
                return entries.slice(Math.max(0, end - size), end).reverse()
              }),
            (entries) => Effect.sync(() => entries.map((e) => tasks.get(`${tenantId}/${taskOfEntry(e)}`)?.task))
          ),
        recentMessages: (tenantId, sessionId, budget) =>
          Effect.sync(() => trimHistory(sessions.get(sessionKey(tenantId, sessionId))?.messages ?? [], budget)),
        summary: (tenantId, sessionId) =>
          Effect.sync(() =>
            Option.map(Option.fromNullable(sessions.get(sessionKey(tenantId, sessionId))), (s) => ({
              task_ids: [...s.task_ids],
              message_count: s.messages.length,
              updated_at: s.updated_at
            }))
          ),
        resetMessages: (tenantId, sessionId, at) =>
          Effect.sync(() => {
            const session = sessions.get(sessionKey(tenantId, sessionId))
            if (session) {
              session.messages = []
              session.updated_at = at
            }
          }),
        onReconnect: () => Effect.void,
        onDisconnect: () => Effect.void
      })
    })
  )

/** Options of `layerRedis`. */
export interface RedisOptions {
  /** First segment of every key, so deployments (or test runs) can share a Redis. Default `altan`. */
  readonly prefix?: string
  /** A task, or a session, neither written nor read for this long is dropped by Redis. Default 7 days. */
  readonly ttl?: Duration.DurationInput
  /** The retention of the event logs `put` appends to: as `EventLog.layerRedis`'s `maxLen` and `ttl` (its defaults). */
  readonly events?: { readonly maxLen?: number; readonly ttl?: Duration.DurationInput }
}

const recordJson = Schema.parseJson(TaskRecord)
const encodeRecord = Schema.encode(recordJson)
const decodeRecord = Schema.decodeUnknown(recordJson)
const messageJson = Schema.parseJson(ChatMessage)
const encodeMessage = Schema.encode(messageJson)
const decodeMessage = Schema.decodeUnknown(messageJson)

/** Messages read at a time, newest first, when collecting a conversation's recent part. */
const page = 64

/** Registers `f` with one of the connection's listeners (`Redis.onReconnect`, `onDisconnect`) for the scope's life. */
const listen = (
  register: (f: (at: number) => void) => () => void,
  f: (at: number) => Effect.Effect<void>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    yield* Effect.acquireRelease(
      Effect.sync(() => register((at) => void Runtime.runFork(runtime)(f(at)))),
      (unregister) => Effect.sync(unregister)
    )
  })

/**
 * Tasks and conversations in Redis. Keys (`{tenant/session}` is the session's hash tag, so a session's keys share a
 * Cluster slot and a `MULTI` over them stays valid):
 *
 * - `<prefix>:t:<tenant>:tr:{tenant/session}:<task>`: the task's record (`TaskRecord` JSON), rewritten per transition;
 * - `<prefix>:t:<tenant>:st:{tenant/session}`: the session's task ids, a list appended to;
 * - `<prefix>:t:<tenant>:sm:{tenant/session}`: its conversation, a list of message JSON appended to;
 * - `<prefix>:t:<tenant>:sh:{tenant/session}`: its summary fields (`updated_at`), a hash;
 * - `<prefix>:t:<tenant>:ev:{tenant/session}:<task>`: the task's event log, `EventLog.layerRedis`'s stream, which `put`
 *   appends to.
 *
 * A write is one `MULTI` touching a task's record and the session's keys (its summary, the lists it appends to, the
 * task's event log), each with `PX ttl`, so its cost does not grow with the session's history; a task read is one `GETEX`, which refreshes the record's TTL. Redis failures
 * are `RedisError`s: the caller decides to wait or to answer 503. A record that does not decode is a defect (treating
 * it as absent would let the next write drop what it holds; waiting would not mend it).
 */
export const layerRedis = (options?: RedisOptions): Layer.Layer<TaskStore, never, Redis> =>
  Layer.effect(
    TaskStore,
    Effect.gen(function*() {
      const redis = yield* Redis
      const { client } = redis
      const prefix = yield* checkPrefix(options?.prefix ?? "altan")
      const px = ttlMillis(options?.ttl ?? Duration.days(7))
      const waitPx = Math.max(px, maxWaitMs)
      const eventsMaxLen = Math.max(1, Math.round(options?.events?.maxLen ?? redisRetention.maxLen))
      const eventsPx = ttlMillis(options?.events?.ttl ?? redisRetention.ttl)
      const keyOf = (kind: string, tenantId: TenantId, sessionId: string) =>
        `${prefix}:t:${tenantId}:${kind}:${sessionTag(tenantId, sessionId)}`
      const recordKey = (tenantId: TenantId, sessionId: string, taskId: string) =>
        `${keyOf("tr", tenantId, sessionId)}:${taskId}`
      const sessionOfTask = (taskId: TaskId) => taskId.slice(0, taskId.lastIndexOf("."))
      const approvalsKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:approvals`
      const listKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:tasks`
      const waitsKey = (tenantId: TenantId, subject: string) => `${prefix}:t:${tenantId}:waits:${subject}`

      type Build = (multi: ReturnType<typeof client.multi>) => void
      const check = (results: Awaited<ReturnType<ReturnType<typeof client.multi>["exec"]>>) => {
        if (results === null) throw new Error("transaction aborted")
        for (const [error] of results) if (error) throw error
        return results.map(([, value]) => value)
      }
      const exec = (operation: string, build: Build) =>
        attempt(operation, async () => {
          const multi = client.multi()
          build(multi)
          return check(await multi.exec())
        })
      /**
       * Transactions sent at once, in order, on the one connection: one round trip, applied in that order. Fails when
       * the first fails; the ones after it that failed are answered, to be sent again on their own (sending the first
       * again would append what it appended twice).
       */
      const execAll = (operation: string, [first, ...rest]: readonly [Build, ...Array<Build>]) =>
        attempt(operation, async () => {
          const send = (build: Build) => {
            const multi = client.multi()
            build(multi)
            return multi.exec().then(check)
          }
          const sent = [send(first), ...rest.map((build) => send(build).then(() => undefined, () => build))]
          const [, ...failed] = await Promise.all(sent)
          return failed.filter((build): build is Build => build !== undefined)
        })
      // a stored value that does not decode is no outage to wait out (nor an absent task): a defect, logged and
      // answered as an internal error
      const corrupt = (what: string, message: string) =>
        Effect.dieMessage(`${what} does not decode (refusing to treat it as absent): ${message}`)
      const touchSession = (
        multi: ReturnType<typeof client.multi>,
        tenantId: TenantId,
        sessionId: string,
        at: string
      ) => multi.hset(keyOf("sh", tenantId, sessionId), "updated_at", at).pexpire(keyOf("sh", tenantId, sessionId), px)

      return TaskStore.of({
        get: (tenantId, taskId) =>
          Effect.gen(function*() {
            const key = recordKey(tenantId, sessionOfTask(taskId), taskId)
            const raw = yield* attempt("GETEX", () => client.getex(key, "PX", px))
            if (raw === null) return Option.none()
            const record = yield* decodeRecord(raw).pipe(Effect.catchAll((e) => corrupt(key, e.message)))
            if (record.task.task_id !== taskId) return yield* corrupt(key, "it holds another task")
            // the read refreshed the usual TTL: a waiting task keeps its longer one
            if (record.task.status === "waiting") yield* attempt("PEXPIRE", () => client.pexpire(key, waitPx))
            return Option.some(record)
          }),

        put: (tenantId, record, options) =>
          Effect.gen(function*() {
            const { session_id: sessionId, task_id: taskId, updated_at: at } = record.task
            const json = yield* encodeRecord(record).pipe(
              Effect.catchAll((e) => Effect.dieMessage(`cannot encode task ${taskId}: ${e.message}`))
            )
            const messages = yield* Effect.forEach(options?.messages ?? [], (m) => encodeMessage(m)).pipe(
              Effect.catchAll((e) => Effect.dieMessage(`cannot encode a message: ${e.message}`))
            )
            const events = yield* Effect.forEach(options?.events ?? [], (event) => encodeBody(event)).pipe(
              Effect.catchAll((e) => Effect.dieMessage(`cannot encode an event of task ${taskId}: ${e.message}`))
            )
            const writes: Array<Build> = [(multi) => {
              // a waiting task may wait longer than the TTL (a month's budget, a 30-day connection timeout): its
              // record is kept at least as long as the longest wait, so its wake finds it
              multi.set(
                recordKey(tenantId, sessionId, taskId),
                json,
                "PX",
                record.task.status === "waiting" ? waitPx : px
              )
              if (options?.created) {
                const list = keyOf("st", tenantId, sessionId)
                multi.rpush(list, taskId).pexpire(list, px)
              }
              if (messages.length > 0) {
                const list = keyOf("sm", tenantId, sessionId)
                multi.rpush(list, ...messages).pexpire(list, px)
              }
              touchSession(multi, tenantId, sessionId, at)
              if (events.length > 0) {
                const log = eventLogKey(prefix, tenantId, sessionId, taskId)
                for (const json of events) multi.xadd(log, "MAXLEN", "~", eventsMaxLen, "*", "e", json)
                multi.pexpire(log, eventsPx)
              }
            }]
            // the tenant's indexes are in another slot than the session's keys: transactions of their own, sent after
            // the record's on the same connection, so Redis applies them after it (the record is what counts; an index
            // only points at it)
            if (options?.created) {
              const list = listKey(tenantId)
              writes.push((multi) =>
                multi.zadd(list, 0, listEntry(record.task)).zremrangebyrank(list, 0, -(maxListed + 1)).pexpire(
                  list,
                  px
                )
              )
            }
            const { settled, waiting } = approvalEntries(record)
            if (waiting.length > 0 || settled.length > 0) {
              const index = approvalsKey(tenantId)
              const data = `${index}:data`
              writes.push((multi) => {
                if (settled.length > 0) multi.zrem(index, ...settled).hdel(data, ...settled)
                for (const [key, entry] of waiting) multi.zadd(index, 0, key).hset(data, key, JSON.stringify(entry))
                multi.pexpire(index, px).pexpire(data, px)
              })
            }
            const waitsOf = waitEntries(record)
            if (waitsOf.waiting.length > 0 || waitsOf.settled.length > 0) {
              writes.push((multi) => {
                for (const [subject, key] of waitsOf.settled) multi.hdel(waitsKey(tenantId, subject), key)
                for (const [subject, key, entry] of waitsOf.waiting) {
                  multi.hset(waitsKey(tenantId, subject), key, JSON.stringify(entry))
                  multi.pexpire(waitsKey(tenantId, subject), waitPx)
                }
              })
            }
            const failed = yield* execAll("write task", writes as [Build, ...Array<Build>])
            // an index that could not be written: again, on its own, a few times; then the write fails (and is
            // retried whole by its caller)
            yield* Effect.forEach(failed, (build) => exec("write task index", build), { discard: true }).pipe(
              Effect.retry({ times: 3, schedule: Schedule.exponential("50 millis") })
            )
          }),

        waitsOn: (tenantId, subject) =>
          attempt("HVALS", () => client.hvals(waitsKey(tenantId, subject))).pipe(
            Effect.map((values) =>
              values.flatMap((json) => {
                try {
                  return [JSON.parse(json) as Wait]
                } catch {
                  return []
                }
              })
            )
          ),

        pendingApprovals: (tenantId, after, limit) =>
          Effect.gen(function*() {
            const index = approvalsKey(tenantId)
            const keys = yield* attempt(
              "ZRANGEBYLEX",
              () => client.zrangebylex(index, after === undefined ? "-" : `(${after}`, "+", "LIMIT", 0, limit + 1)
            )
            const page = keys.slice(0, limit)
            const raw = page.length > 0
              ? yield* attempt("HMGET", () => client.hmget(`${index}:data`, ...page))
              : []
            const entries = raw.flatMap((json) => {
              if (json === null) return []
              try {
                return [JSON.parse(json) as PendingApproval]
              } catch {
                return []
              }
            })
            return { entries, ...(keys.length > limit ? { next: page[page.length - 1]! } : {}) }
          }),

        listTasks: (tenantId, query) =>
          collectPage(
            query,
            (before, size) =>
              attempt(
                "ZREVRANGEBYLEX",
                () =>
                  client.zrevrangebylex(
                    listKey(tenantId),
                    before === undefined ? "+" : `(${before}`,
                    "-",
                    "LIMIT",
                    0,
                    size
                  )
              ),
            (entries) =>
              Effect.forEach(entries, (entry) => {
                const taskId = taskOfEntry(entry)
                const key = recordKey(tenantId, sessionOfTask(taskId), taskId)
                return attempt("GET", () => client.get(key)).pipe(
                  Effect.flatMap((raw) =>
                    raw === null
                      ? Effect.succeed(undefined)
                      : decodeRecord(raw).pipe(
                        Effect.map((r) => r.task),
                        Effect.catchAll((e) => corrupt(key, e.message))
                      )
                  )
                )
              }, { concurrency: 16 })
          ),

        recentMessages: (tenantId, sessionId, budget) =>
          Effect.gen(function*() {
            const list = keyOf("sm", tenantId, sessionId)
            // newest first, a page at a time, until the budget is spent or the conversation's start is reached
            const newest: Array<ChatMessage> = []
            let chars = 0
            for (let from = 0;; from += page) {
              const raw = yield* attempt("LRANGE", () => client.lrange(list, -(from + page), -(from + 1)))
              for (let i = raw.length - 1; i >= 0; i--) {
                const message = yield* decodeMessage(raw[i]).pipe(Effect.catchAll((e) => corrupt(list, e.message)))
                newest.push(message)
                chars += messageSize(message)
              }
              if (raw.length < page || chars > budget) break
            }
            return trimHistory(newest.reverse(), budget)
          }),

        summary: (tenantId, sessionId) =>
          Effect.gen(function*() {
            const [ids, count, at] = (yield* exec("session summary", (multi) => {
              multi.lrange(keyOf("st", tenantId, sessionId), 0, -1)
                .llen(keyOf("sm", tenantId, sessionId))
                .hget(keyOf("sh", tenantId, sessionId), "updated_at")
            })) as [Array<string>, number, string | null]
            if (at === null) return Option.none()
            // a list append retried after its answer was lost may have landed twice
            return Option.some({ task_ids: [...new Set(ids)] as Array<TaskId>, message_count: count, updated_at: at })
          }),

        resetMessages: (tenantId, sessionId, at) =>
          exec("reset messages", (multi) => {
            multi.del(keyOf("sm", tenantId, sessionId))
            touchSession(multi, tenantId, sessionId, at)
          }).pipe(Effect.asVoid),

        onReconnect: (f) => listen(redis.onReconnect, f),
        onDisconnect: (f) => listen(redis.onDisconnect, f)
      })
    })
  )
