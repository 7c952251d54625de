import * as MachineId from "@effect/cluster/MachineId"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as Snowflake from "@effect/cluster/Snowflake"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"

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

/** The same for the in-process storage of a single runner: processed requests leave the journal and indexes. */
export const pruneMemory = (driver: MessageStorage.MemoryDriver, before: number): number => {
  const limit = cutoff(before, Duration.zero)
  const journal = driver.journal
  let kept = 0
  for (const envelope of journal) {
    const id = Snowflake.Snowflake(envelope._tag === "Request" ? envelope.requestId : envelope.id)
    if (driver.unprocessed.has(envelope) || id >= limit) {
      journal[kept++] = envelope
    } else if (envelope._tag === "Request") {
      const entry = driver.requests.get(envelope.requestId)
      for (const reply of entry?.replies ?? []) driver.replyIds.delete(reply.id)
      driver.requests.delete(envelope.requestId)
    }
  }
  const removed = journal.length - kept
  // the driver holds this very array: compact it in place
  journal.length = kept
  for (const [key, entry] of driver.requestsByPrimaryKey) {
    if (!driver.requests.has(entry.envelope.requestId)) driver.requestsByPrimaryKey.delete(key)
  }
  return removed
}

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
): Layer.Layer<never, never, MessageStorage.MemoryDriver> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const driver = yield* MessageStorage.MemoryDriver
    yield* run((before) => Effect.sync(() => pruneMemory(driver, before)), Duration.decode(retention))
  }))
