import { AgentSession } from "@altan/domain/AgentSession"
import * as ClusterMetrics from "@effect/cluster/ClusterMetrics"
import * as Entity from "@effect/cluster/Entity"
import * as EntityAddress from "@effect/cluster/EntityAddress"
import * as EntityId from "@effect/cluster/EntityId"
import * as Envelope from "@effect/cluster/Envelope"
import * as Message from "@effect/cluster/Message"
import * as Sharding from "@effect/cluster/Sharding"
import * as Headers from "@effect/platform/Headers"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as path from "node:path"
import { type RedisServer, startRedis } from "./fault/harness.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * A session rewrites the records it wrote just before Redis went away once Redis is back (what a crashed server
 * acknowledged in its last second may be lost). A session idle for longer than `SESSION_MAX_IDLE_TIME` is passivated;
 * one holding such records must stay until they are written again, however long the outage, or its task's end is
 * lost for good. The Redis here keeps nothing across its kill (its AOF removed), so the loss is certain.
 */
let redis: RedisServer
let edge: Awaited<ReturnType<typeof startEdge>>
let started = 0

beforeAll(async () => {
  redis = await startRedis()
  edge = await startEdge(makeProbes(), {
    redis: { url: redis.url, prefix: "outage" },
    agent: { sessionMaxIdleTime: Duration.seconds(1) }
  })
  started = Date.now()
}, 60_000)

afterAll(async () => {
  await edge?.close()
  await redis?.close()
}, 60_000)

/** Live `AgentSession`s of the runtime: the cluster's gauge, updated every second. */
const liveSessions = () =>
  Number(Effect.runSync(Metric.value(ClusterMetrics.entities.pipe(Metric.tagged("type", "AgentSession")))).value)

describe("a Redis outage longer than a session's idle time", () => {
  it("keeps the session until Redis is back, and its last writes are written again", async () => {
    const token = await edge.sign({ tenant_id: "outage", role: "admin" })
    const task = await edge.call("POST", "/v1/tasks", token, {
      input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
    })
    expect(task.status).toBe(200)
    expect(task.body.status).toBe("succeeded")

    // gone within the rewrite window of the task's last write, with everything it had
    redis.kill("SIGKILL")
    await redis.waitExit()
    fs.rmSync(path.join(redis.dir, "appendonlydir"), { recursive: true, force: true })
    // past the idle time and the reaper's looks (its first 30 s after the runtime started, then every 5 s at this
    // idle time): an idle session is gone by now
    await new Promise((resolve) => setTimeout(resolve, Math.max(8_000, started + 42_000 - Date.now())))
    // but not this one
    expect(liveSessions()).toBe(1)
    await redis.start()

    let read: Awaited<ReturnType<typeof edge.call>> | undefined
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      read = await edge.call("GET", `/v1/tasks/${task.body.task_id}`, token)
      if (read.status === 200) break
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    expect(read?.status).toBe(200)
    expect(read?.body).toEqual(task.body)

    // written again, the session is let go: it passivates once idle
    const until = Date.now() + 20_000
    while (Date.now() < until && liveSessions() > 0) await new Promise((resolve) => setTimeout(resolve, 250))
    expect(liveSessions()).toBe(0)
  }, 90_000)

  it("a hold redelivered to a new activation (its runner died holding it) does not keep the session", async () => {
    // what `Entity.keepAlive(true)` sends, as if the session's last runner had sent it and died
    await edge.run(Effect.gen(function*() {
      const sharding = yield* Sharding.Sharding
      const entityId = EntityId.make("outage/orphan")
      const address = EntityAddress.make({
        entityType: AgentSession.type,
        entityId,
        shardId: sharding.getShardId(entityId, "agent")
      })
      yield* Effect.orDie(sharding.sendOutgoing(
        new Message.OutgoingRequest({
          rpc: Entity.KeepAliveRpc,
          context: Context.empty() as never,
          envelope: Envelope.makeRequest({
            requestId: yield* sharding.getSnowflake,
            address,
            tag: Entity.KeepAliveRpc._tag,
            payload: void 0,
            headers: Headers.empty,
            traceId: "0",
            spanId: "0",
            sampled: false
          }),
          lastReceivedReply: Option.none(),
          respond: () => Effect.void
        }),
        true
      ))
    }))
    const activated = Date.now() + 5_000
    while (Date.now() < activated && liveSessions() === 0) await new Promise((resolve) => setTimeout(resolve, 100))
    expect(liveSessions()).toBe(1)
    // idle a second, and the reaper looks every 5 s by now
    const until = Date.now() + 15_000
    while (Date.now() < until && liveSessions() > 0) await new Promise((resolve) => setTimeout(resolve, 250))
    expect(liveSessions()).toBe(0)
  }, 30_000)
})
