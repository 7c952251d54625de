/**
 * Cost as history grows.
 *
 * 1. On Redis: one session's tasks 1-10 against its tasks 291-300 (latency, and the bytes and commands Redis
 *    received per task), beside tasks that each start a new session (`HISTORY_SESSION_TASKS`, default 300).
 * 2. Embedded (`npm start` without `DATABASE_URL`): many one-step tasks over HTTP, over a fixed set of sessions
 *    (`HISTORY_SESSIONS`, 64, so the live entities stay as many while the history grows), and the
 *    throughput (and CPU per task) of the first window of tasks beside the last one's: on our indexed memory storage,
 *    and in the same run on the library's memory storage, which scans its whole journal on every read. Settings:
 *    `HISTORY_TASKS` (10000), `HISTORY_WINDOW` (1000), `HISTORY_CONCURRENCY` (16), `HISTORY_WARMUP` (1000 tasks before
 *    counting, for the JIT), `HISTORY_MAX_SECONDS` (180 per storage: a run past it stops and reports the tasks it
 *    finished). `HISTORY_ONLY=redis` runs part 1 alone.
 */
import { MemoryMessageStorage } from "@altan/storage/MemoryMessageStorage"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as Effect from "effect/Effect"
import { Redis as IORedis } from "ioredis"
import { spawn } from "node:child_process"
import { createServer } from "node:net"
import { loadavg } from "node:os"
import { oneRunner, startRuntime } from "./harness.js"

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

const sessions = Math.max(1, setting("HISTORY_SESSIONS", 64))
// a fixed set of sessions, used in turn: the runtime holds as many live sessions at the end as at the start, so
// what grows is the history (messages processed, tasks recorded), not the number of entities in memory
const oneStep = (n: number) =>
  JSON.stringify({
    session_id: `h${n % sessions}`,
    input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
  })

/** The same single runner as `ShardingMemory`, on the library's memory storage: the baseline. */
const librarySharding = oneRunner(MessageStorage.layerMemory)

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
  let n = 0
  const task = async () => {
    const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: oneStep(n++) })
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

/** A Redis server of the bench's own on a free port (nothing else writes to it, so its counters are ours). */
const ownRedis = async () => {
  const port = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
  const child = spawn("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no"
  ], {
    stdio: "ignore"
  })
  process.once("exit", () => child.kill("SIGKILL"))
  const client = new IORedis(`redis://127.0.0.1:${port}`, { lazyConnect: true, retryStrategy: () => 50 })
  // refused until the server listens: the loop below waits for it
  client.on("error", () => undefined)
  for (let i = 0; i < 100; i++) {
    try {
      await client.connect()
      break
    } catch {
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return { url: `redis://127.0.0.1:${port}`, client, stop: () => (client.disconnect(), child.kill("SIGKILL")) }
}

const historyTasks = setting("HISTORY_SESSION_TASKS", 300)

/**
 * One session's tasks 1-10 against its tasks 291-300 (`HISTORY_SESSION_TASKS`), on Redis: latency, and the bytes and
 * commands Redis received per task (its own `total_net_input_bytes` and `total_commands_processed`, on a server of the
 * bench's own). Beside them, the same for tasks that each start a new session: the cost of a task without history.
 */
const sessionHistoryOnRedis = async (): Promise<ReadonlyArray<Row>> => {
  const redis = await ownRedis()
  const runtime = await startRuntime({ redis: { url: redis.url, prefix: "bench" } })
  const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
  const twoSteps = (session: string) =>
    JSON.stringify({
      session_id: session,
      input: {
        steps: [
          { id: "a", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } },
          { id: "b", tool: "text.template", input: { template: "{{t}}!", variables: { t: { $ref: "a.output.text" } } } }
        ]
      }
    })
  const counters = async () => {
    const info = await redis.client.info("stats")
    const field = (name: string) => Number(new RegExp(`${name}:(\\d+)`).exec(info)![1])
    return { bytes: field("total_net_input_bytes"), commands: field("total_commands_processed") }
  }
  const measureTasks = async (count: number, session: (i: number) => string) => {
    const out: Array<{ ms: number; bytes: number; commands: number }> = []
    for (let i = 0; i < count; i++) {
      const before = await counters()
      const started = performance.now()
      const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: twoSteps(session(i)) })
      const json = await res.json() as { status: string }
      const ms = performance.now() - started
      if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
      const after = await counters()
      // the INFO call itself counts one command and its bytes: taken off
      out.push({ ms, bytes: after.bytes - before.bytes, commands: after.commands - before.commands - 1 })
    }
    return out
  }
  const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
  const row = (name: string, sample: ReadonlyArray<{ ms: number; bytes: number; commands: number }>): Row => ({
    storage: name,
    tasks: sample.length,
    "p50 ms": median(sample.map((s) => s.ms)).toFixed(2),
    "bytes to Redis per task (median)": median(sample.map((s) => s.bytes)),
    "commands per task (median)": median(sample.map((s) => s.commands))
  })
  await measureTasks(50, (i) => `warm${i}`)
  const fresh = await measureTasks(20, (i) => `fresh${i}`)
  const one = await measureTasks(historyTasks, () => "long")
  await runtime.stop()
  redis.stop()
  const first = one.slice(0, 10)
  const last = one.slice(-10)
  const ratio = (f: (s: { ms: number; bytes: number }) => number) =>
    `${(median(last.map(f)) / median(first.map(f))).toFixed(2)}x`
  console.log(
    `one session on Redis: tasks ${historyTasks - 9}-${historyTasks} vs 1-10: latency ${ratio((s) => s.ms)}, ` +
      `bytes ${ratio((s) => s.bytes)}`
  )
  return [
    row("redis: a new session per task (baseline)", fresh),
    row("redis: one session, tasks 1-10", first),
    row(`redis: one session, tasks ${historyTasks - 9}-${historyTasks}`, last)
  ]
}

const redisRows = await sessionHistoryOnRedis()
console.table(redisRows)
if (process.env.HISTORY_ONLY === "redis") process.exit(0)
console.log(
  `${tasks} one-step tasks over HTTP (after ${warmup} warm-up), ${concurrency} in flight, over ${sessions} sessions; ` +
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
process.exit(0)
