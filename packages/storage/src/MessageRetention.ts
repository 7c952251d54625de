import * as MachineId from "@effect/cluster/MachineId"
import * as Snowflake from "@effect/cluster/Snowflake"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as MemoryMessageStorage from "./MemoryMessageStorage.js"

/**
 * The cluster keeps every persisted message and reply forever; this job deletes those processed
 * longer than the retention ago. A repeated `Submit` within the retention is answered from storage;
 * after it, the session's own task record still answers it.
 */
const cutoff = (now: number, retention: Duration.Duration) =>
  Snowflake.make({ timestamp: now - Duration.toMillis(retention), machineId: MachineId.make(0), sequence: 0 })

/** Deletes processed messages (and their replies) of the SQL storage older than the cutoff; returns how many. */
export const pruneSql = (options: { readonly before: number; readonly prefix?: string }) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const prefix = options.prefix ?? "cluster"
    const id = cutoff(options.before, Duration.zero).toString()
    const rows = yield* sql<{ count: string }>`
      WITH gone AS (
        DELETE FROM ${sql(`${prefix}_messages`)} WHERE processed = TRUE AND id < ${id} RETURNING request_id
      ), replies AS (
        DELETE FROM ${sql(`${prefix}_replies`)} WHERE request_id IN (SELECT request_id FROM gone) RETURNING id
      )
      SELECT (SELECT count(*) FROM gone) AS count
    `
    return Number(rows[0]?.count ?? 0)
  })

/**
 * The same for the in-process storage of a single runner: forgets requests (with their replies) whose exit was
 * saved before `before`, in time proportional to how many it removes; returns how many.
 */
export const pruneMemory = (store: MemoryMessageStorage.Store, before: number): number =>
  MemoryMessageStorage.prune(store, before)

const every = (retention: Duration.Duration) =>
  Schedule.spaced(Duration.clamp(Duration.millis(Duration.toMillis(retention) / 2), {
    minimum: Duration.seconds(1),
    maximum: Duration.minutes(5)
  }))

const run = <R>(prune: (now: number) => Effect.Effect<number, unknown, R>, retention: Duration.Duration) =>
  Clock.currentTimeMillis.pipe(
    Effect.flatMap((now) => prune(now - Duration.toMillis(retention))),
    Effect.tap((n) => n > 0 ? Effect.logDebug(`pruned ${n} processed cluster messages`) : Effect.void),
    Effect.catchAllCause((cause) => Effect.logWarning("pruning processed cluster messages failed", cause)),
    // first run one interval after start (by then the cluster's tables exist), then every interval, for good
    Effect.schedule(every(retention)),
    Effect.forkScoped,
    Effect.asVoid
  )

export const layerSql = (retention: Duration.DurationInput): Layer.Layer<never, never, SqlClient.SqlClient> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* run(
      (before) => Effect.provideService(pruneSql({ before }), SqlClient.SqlClient, sql),
      Duration.decode(retention)
    )
  }))

export const layerMemory = (
  retention: Duration.DurationInput
): Layer.Layer<never, never, MemoryMessageStorage.MemoryMessageStorage> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const store = yield* MemoryMessageStorage.MemoryMessageStorage
    yield* run((before) => Effect.sync(() => pruneMemory(store, before)), Duration.decode(retention))
  }))
