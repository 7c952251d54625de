/**
 * Shutting down a runner that holds many live sessions: `SESSIONS` (default 100k) `AgentSession` entities are
 * activated (each answers one message and stays in memory), then the runtime is stopped; printed: heap while they
 * live, and how long the stop takes, beside the same for as many no-op entities (the raw engine) in another run of
 * the same process. The runner's termination grace period must be above the time printed.
 */
import { AgentSession } from "@altan/domain/AgentSession"
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { startRuntime } from "./harness.js"

const count = Number(process.env.SESSIONS ?? 100_000)
const Noop = Entity.make("Noop", [Rpc.make("Ping")]).annotate(ClusterSchema.ShardGroup, () => "agent")
const NoopLive = Noop.toLayer(Effect.succeed(Noop.of({ Ping: () => Effect.void })), { maxIdleTime: "1 hour" })

const heapMb = () => {
  globalThis.gc?.()
  return process.memoryUsage().heapUsed / 2 ** 20
}

const run = async (
  name: string,
  activate: (runtime: Awaited<ReturnType<typeof startRuntime>>, i: number) => Promise<unknown>
) => {
  // sessions held as long as the no-op entities, whatever `SESSION_MAX_IDLE_TIME` says
  const runtime = await startRuntime({ extra: NoopLive, agent: { sessionMaxIdleTime: Duration.hours(1) } })
  const before = heapMb()
  const started = performance.now()
  // a bounded number in flight, so activation itself does not hold the heap
  let next = 0
  await Promise.all(Array.from({ length: 256 }, async () => {
    while (next < count) await activate(runtime, next++)
  }))
  const activated = (performance.now() - started) / 1000
  const live = heapMb()
  console.error(`${name}: ${count} activated in ${activated.toFixed(1)} s, heap +${(live - before).toFixed(0)} MB`)
  const stopStarted = performance.now()
  await runtime.stop()
  const stopped = (performance.now() - stopStarted) / 1000
  return {
    scenario: name,
    entities: count,
    "activation s": activated.toFixed(1),
    "heap MB live": (live - before).toFixed(0),
    "KB per entity": ((live - before) * 1024 / count).toFixed(1),
    "stop s": stopped.toFixed(2)
  }
}

const only = process.env.ONLY
const rows = []
if (only !== "agent") {
  rows.push(
    await run("engine: no-op entities (baseline)", async (runtime, i) => {
      const client = await runtime.run(Noop.client)
      await runtime.run(client(`n${i}`).Ping())
    })
  )
}
if (only !== "engine") {
  rows.push(
    await run("agent: live AgentSession entities", async (runtime, i) => {
      const client = await runtime.run(AgentSession.client)
      // an unknown session answers NotFound, and stays activated until its idle time
      await runtime.run(Effect.either(client(`bench/s${i}`).GetSession()))
    })
  )
}
console.table(rows)
