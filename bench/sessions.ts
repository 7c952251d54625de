/**
 * Memory of idle sessions, beside the raw engine in the same run: heap per idle no-op entity (the floor any entity
 * of the cluster costs), per idle `AgentSession` (activated by a read, as a session is between tasks after its
 * passivation and re-activation), and per session that ran one task (a sync one-step plan over HTTP; its record stays
 * in the session's memory). Then 100,000 idle sessions in one runner: heap and resident set. Last, on the runtime as
 * `npm start` runs it (a process of its own, the default `SESSION_MAX_IDLE_TIME`), one-off tasks (no `session_id`: a
 * new session each) at 32 in flight for `ONE_OFF_SECONDS` (120), then 95 s without any: its heap as it goes, beside
 * what it would hold if it kept every session it made.
 */
import { AgentSession } from "@altan/domain/AgentSession"
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { scenarioTask, serveRuntime, startRuntime } from "./harness.js"

// in the agent shard group, like AgentSession (an unannotated entity lands in "default", which no runner hosts)
const Noop = Entity.make("Noop", [Rpc.make("Ping")]).annotate(ClusterSchema.ShardGroup, () => "agent")
const NoopLive = Noop.toLayer(Effect.succeed(Noop.of({ Ping: () => Effect.void })), { maxIdleTime: "1 hour" })

// sessions held as long as the no-op entities, whatever `SESSION_MAX_IDLE_TIME` says
const runtime = await startRuntime({ extra: NoopLive, agent: { sessionMaxIdleTime: Duration.hours(1) } })
if (!globalThis.gc) throw new Error("run with --expose-gc (npm run bench does)")
const heap = () => {
  globalThis.gc!()
  globalThis.gc!()
  return process.memoryUsage().heapUsed
}
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`
const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`

/** Heap per entity after `count` activations by `make`, 500 at a time. */
const activate = async (count: number, make: (i: number) => Effect.Effect<unknown, unknown>) => {
  const before = heap()
  for (let i = 0; i < count; i += 500) {
    await runtime.run(
      Effect.forEach(Array.from({ length: 500 }, (_, j) => i + j), (j) => Effect.ignore(make(j)), { concurrency: 500 })
    )
  }
  return (heap() - before) / count
}
const noop = await runtime.run(Noop.client)
const sessions = await runtime.run(AgentSession.client)

const perNoop = await activate(20_000, (i) => noop(`idle-${i}`).Ping())
const perIdle = await activate(20_000, (i) => sessions(`bench/idle-${i}`).GetSession())

// sessions that ran one task each (32 in flight over HTTP)
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
const plan = (session: string) =>
  JSON.stringify({
    session_id: session,
    input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
  })
const ran = 5_000
const beforeRan = heap()
let next = 0
await Promise.all(Array.from({ length: 32 }, async () => {
  while (next < ran) {
    const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: plan(`ran-${next++}`) })
    const json = await res.json() as { status: string }
    if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
  }
}))
const perRan = (heap() - beforeRan) / ran

console.log(
  `heap per idle entity: no-op ${kb(perNoop)}, AgentSession ${kb(perIdle)} (${(perIdle / perNoop).toFixed(2)}x); ` +
    `AgentSession after one task ${kb(perRan)} (${(perRan / perNoop).toFixed(2)}x)`
)

const many = 100_000
const rssBefore = process.memoryUsage().rss
const heapBefore = heap()
await activate(many, (i) => sessions(`bench/many-${i}`).GetSession())
const { rss } = process.memoryUsage()
console.log(
  `${many.toLocaleString("en")} more idle sessions: heap +${mb(heap() - heapBefore)}, resident set ${mb(rss)} ` +
    `(+${mb(rss - rssBefore)}); the process holds ${(20_000 + 20_000 + ran + many).toLocaleString("en")} entities`
)

// last, one-off tasks on the runtime as `npm start` runs it (its own process, the default idle time, which lets its
// sessions go), its heap read over IPC
const defaults = await serveRuntime()
const serverHeap = () => defaults.ask("heap").then((answer) => (answer as { heap: number }).heap)
// a sync one-step plan without `session_id`: a new session each
const oneOffTask = await scenarioTask(defaults, "plan")
const seconds = Number(process.env["ONE_OFF_SECONDS"] ?? 120)
const heapBeforeOneOff = await serverHeap()
const started = performance.now()
const deadline = started + seconds * 1000
let done = 0
const samples: Array<{ readonly at: number; readonly tasks: number; readonly grown: number }> = []
const sample = async () => {
  const at = (performance.now() - started) / 1000
  const tasks = done
  samples.push({ at, tasks, grown: (await serverHeap()) - heapBeforeOneOff })
}
await Promise.all([
  ...Array.from({ length: 32 }, async () => {
    while (performance.now() < deadline) {
      await oneOffTask()
      done++
    }
  }),
  (async () => {
    while (performance.now() + 15_000 < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 15_000))
      await sample()
    }
  })()
])
await sample()
// then until its last sessions have left (the idle time, and the check every 30 s)
await new Promise((resolve) => setTimeout(resolve, 95_000))
await sample()

console.log(
  `one-off tasks (a new session each) at 32 in flight for ${seconds} s, \`SESSION_MAX_IDLE_TIME\` at its default, then ` +
    `95 s idle: heap as it went, beside the sessions made times the heap of a session after one task (above)`
)
for (const { at, grown, tasks } of samples) {
  console.log(
    `  ${at.toFixed(0).padStart(4)} s: ${tasks.toLocaleString("en")} tasks, heap +${mb(grown)}; ` +
      `every session held: +${mb(tasks * perRan)}`
  )
}
// no graceful stop: shutting down 145k live entities is its own (slow) story
process.exit(0)
