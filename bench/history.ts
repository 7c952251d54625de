/**
 * Cost as history grows. The embedded runtime (`npm start` without `DATABASE_URL`) runs many one-step tasks over
 * HTTP, each in a new session, and the throughput (and CPU per task) of the first window of tasks is set beside the
 * last one's: on our indexed memory storage, and in the same run on the library's memory storage, which scans its
 * whole journal on every read. Settings: `HISTORY_TASKS` (10000), `HISTORY_WINDOW` (1000), `HISTORY_CONCURRENCY`
 * (16), `HISTORY_WARMUP` (1000 tasks before counting, for the JIT), `HISTORY_MAX_SECONDS` (180 per storage: a run past it stops
 * and reports the tasks it finished).
 */
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { loadavg } from "node:os"
import { MemoryMessageStorage } from "../packages/cluster/src/MemoryMessageStorage.js"
import { shardGroups, shardsPerGroup } from "../packages/cluster/src/RuntimeConfig.js"
import { startRuntime } from "./harness.js"

const setting = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number, got ${process.env[name]}`)
  return value
}
const tasks = setting("HISTORY_TASKS", 10_000)
const window = Math.min(setting("HISTORY_WINDOW", 1_000), Math.floor(tasks / 2))
const concurrency = Math.max(1, setting("HISTORY_CONCURRENCY", 16))
const warmup = setting("HISTORY_WARMUP", 1_000)
const maxSeconds = setting("HISTORY_MAX_SECONDS", 180)

// `bench/run.ts` starts node with --expose-gc
const gc = (globalThis as { gc?: () => void }).gc

const oneStep = JSON.stringify({
  input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
})

/** The same single runner as `ShardingMemory`, on the library's memory storage: the baseline. */
const librarySharding = Sharding.layer.pipe(
  Layer.provideMerge(Runners.layerNoop),
  Layer.provideMerge(MessageStorage.layerMemory),
  Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
  Layer.provide(ShardingConfig.layer({
    availableShardGroups: shardGroups,
    assignedShardGroups: shardGroups,
    shardsPerGroup,
    simulateRemoteSerialization: false
  }))
)

interface Row {
  readonly storage: string
  readonly [column: string]: string | number
}

/** Runs the tasks on one embedded runtime; the first and last windows of completions, side by side. */
const embedded = async (
  storage: string,
  options: Parameters<typeof startRuntime>[0],
  held: Effect.Effect<number, never, any>
): Promise<Row> => {
  const runtime = await startRuntime(options)
  const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
  const task = async () => {
    const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: oneStep })
    const json = await res.json() as { status: string }
    if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
  }
  const drive = async (count: number, onDone: () => void, deadline = Infinity) => {
    let started = 0
    const worker = async () => {
      while (started < count && performance.now() < deadline) {
        started++
        await task()
        onDone()
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
  }
  await drive(warmup, () => {})

  const cpuMs = () => {
    const { system, user } = process.cpuUsage()
    return (user + system) / 1000
  }
  const loadBefore = loadavg()[0]!
  // completion i (1-based) at times[i]; index 0 is the start
  const times = [performance.now()]
  const cpu = [cpuMs()]
  await drive(tasks, () => {
    times.push(performance.now())
    cpu.push(cpuMs())
  }, times[0]! + maxSeconds * 1000)
  const done = times.length - 1
  if (done < 2 * window) throw new Error(`${storage}: only ${done} tasks in ${maxSeconds} s, fewer than two windows`)
  const perSecond = (from: number, to: number) => (to - from) / ((times[to]! - times[from]!) / 1000)
  const cpuPerTask = (from: number, to: number) => (cpu[to]! - cpu[from]!) / (to - from)
  const first = perSecond(0, window)
  const last = perSecond(done - window, done)
  const stored = await runtime.run(held)
  gc?.()
  const heap = process.memoryUsage().heapUsed / 2 ** 20
  await runtime.stop()
  return {
    storage,
    tasks: done,
    [`first ${window} /s`]: Math.round(first),
    [`last ${window} /s`]: Math.round(last),
    "last vs first": `${(last / first * 100).toFixed(0)}%`,
    "CPU ms/task first": cpuPerTask(0, window).toFixed(2),
    "CPU ms/task last": cpuPerTask(done - window, done).toFixed(2),
    "messages held at end": stored,
    "heap MB at end (after GC)": Math.round(heap),
    // other processes on the machine take CPU from the runtime: rates fall, CPU per task much less so
    "load avg before/after": `${loadBefore.toFixed(1)}/${loadavg()[0]!.toFixed(1)}`
  }
}

/**
 * FOR THE LEAD: the Redis part of bench/history, to be written. Latency and Redis bytes written per task for tasks
 * 1–10 vs 291–300 of one session (`REDIS_URL`), as rows to print beside the embedded ones.
 */
const sessionHistoryOnRedis = async (): Promise<ReadonlyArray<Row>> => []

console.log(
  `${tasks} one-step tasks over HTTP (after ${warmup} warm-up), ${concurrency} in flight, each in a new session; ` +
    `windows of ${window}; no retention sweep during the run`
)
const rows: Array<Row> = []
rows.push(
  await embedded("ours (MemoryMessageStorage)", {}, Effect.map(MemoryMessageStorage, (store) => store.size))
)
// the first runtime's garbage is not charged to the second
gc?.()
rows.push(
  await embedded(
    "library (MessageStorage.layerMemory, baseline)",
    { sharding: librarySharding },
    Effect.map(MessageStorage.MemoryDriver, (driver) => driver.journal.length)
  )
)
console.table(rows)
const redis = await sessionHistoryOnRedis()
if (redis.length > 0) console.table(redis)
process.exit(0)
