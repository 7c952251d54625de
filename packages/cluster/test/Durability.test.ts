import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * Sessions, task records and event logs in a real Redis: what one runtime wrote, a completely new one
 * (new cluster, new entities, new connections) reads back; an idle session leaves memory and comes back
 * from Redis.
 */
const url = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `test-${randomBytes(5).toString("hex")}`
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let redis: Redis

type Edge = Awaited<ReturnType<typeof startEdge>>
const boot = async () => {
  const edge = await startEdge(makeProbes(), {
    redis: { url, prefix },
    agent: { sessionMaxIdleTime: Duration.seconds(1) }
  })
  const admin = await edge.sign({ tenant_id: "durable", role: "admin" })
  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    edge.call(method, path, admin, body, headers)
  // integrator configuration is in memory (its Redis layer is a later issue): set it on every boot
  await call("PUT", "/v1/secrets/k", { value: "sk-durable" })
  await call("PUT", "/v1/llms/m", { llm_id: "m", endpoint: fake.url, auth: { type: "api_key", key: "k" } })
  await call("PUT", "/v1/settings", { default_llm: "m" })
  return { edge, call }
}

/** Parses a text/event-stream body into its events. */
const sse = (text: string) =>
  text.split("\n\n").filter((block) => block.includes("data:")).map((block) => {
    const field = (name: string) => block.split("\n").find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2)
    return { id: field("id")!, event: field("event")!, data: JSON.parse(field("data")!) }
  })

beforeAll(async () => {
  fake = await startFakeOpenAi()
  redis = new Redis(url)
})

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`)
  if (keys.length > 0) await redis.del(...keys)
  redis.disconnect()
  await fake.close()
})

describe("durable sessions (Redis)", () => {
  let first: { edge: Edge; call: Awaited<ReturnType<typeof boot>>["call"] }
  let taskId = ""

  it("keeps context, task records and events across a full teardown and rebuild", async () => {
    first = await boot()
    fake.script(
      { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"city":"Lyon"},"path":"city"}` }] },
      { kind: "answer", content: "You live in Lyon." }
    )
    const task = await first.call("POST", "/v1/tasks", { input: "Where do I live?", session_id: "s1" })
    expect(task.body.status).toBe("succeeded")
    taskId = task.body.task_id
    await first.edge.close()

    const second = await boot()
    try {
      // the task, by id, on a runtime that never saw it
      const again = await second.call("GET", `/v1/tasks/${taskId}`)
      expect(again.status).toBe(200)
      expect(again.body).toEqual(task.body)
      // the conversation continues where it was
      fake.script({ kind: "answer", content: "Lyon, as you said." })
      const next = await second.call("POST", "/v1/tasks", { input: "Remind me?", session_id: "s1" })
      expect(next.body.status).toBe("succeeded")
      const sent = fake.received[0]!.body.messages.map((m: any) => m.content)
      expect(sent).toEqual(expect.arrayContaining(["Where do I live?", "You live in Lyon.", "Remind me?"]))
      // the first task's events, resumable from any id
      const events = sse((await second.call("GET", `/v1/tasks/${taskId}/events`)).text)
      expect(events.map((e) => e.event)).toEqual([
        "task.queued",
        "task.started",
        "llm.completed",
        "tool.started",
        "tool.completed",
        "llm.completed",
        "task.succeeded"
      ])
      expect(events.at(-1)!.data.data).toEqual({ output: "You live in Lyon." })
      const resumed = sse(
        (await second.call("GET", `/v1/tasks/${taskId}/events`, undefined, { "last-event-id": events[3]!.id })).text
      )
      expect(resumed.map((e) => e.id)).toEqual(events.slice(4).map((e) => e.id))
      // an unknown task has no event stream
      expect((await second.call("GET", `/v1/tasks/s1.nope/events`)).status).toBe(404)
    } finally {
      await second.edge.close()
    }
  })

  it("streams live events to a client that connected before the task finished", async () => {
    const { call, edge } = await boot()
    try {
      fake.script(
        { kind: "tools", calls: [{ name: "probe-barrier", arguments: `{"label":"solo"}` }] },
        { kind: "answer", content: "ok" }
      )
      const task = await call("POST", "/v1/tasks", { input: "slow", session_id: "live", mode: "async" })
      // the lone barrier call waits up to 5 s for a partner, so the stream opens mid-task
      const events = sse((await call("GET", `/v1/tasks/${task.body.task_id}/events`)).text)
      expect(events.at(-1)!.event).toBe("task.succeeded")
      expect(new Set(events.map((e) => e.id)).size).toBe(events.length)
    } finally {
      await edge.close()
    }
  })

  it("passivates an idle session and reloads its tasks from Redis", async () => {
    const { call, edge } = await boot()
    try {
      fake.script({ kind: "answer", content: "hello" })
      const task = await call("POST", "/v1/tasks", { input: "hi", session_id: "idle" })
      expect((await call("GET", "/v1/sessions/idle")).body.message_count).toBe(2)
      // change the stored record behind the runtime's back; only a reload can see it
      const [key] = await redis.keys(`${prefix}:t:durable:tr:*idle*`)
      const stored = JSON.parse((await redis.get(key!))!)
      stored.task.output = "written directly"
      await redis.set(key!, JSON.stringify(stored), "KEEPTTL")
      const read = async () => (await call("GET", `/v1/tasks/${task.body.task_id}`)).body.output
      expect(await read()).toBe("hello") // still what the session holds
      // max idle 1 s; the cluster's reaper sweeps every 5 s, its first sweep up to 30 s after start
      const deadline = Date.now() + 45_000
      let output = await read()
      while (output === "hello" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1_500)) // longer than the idle time, so polling never keeps it alive
        output = await read()
      }
      expect(output).toBe("written directly")
      expect(await redis.pttl(key!)).toBeGreaterThan(6 * 24 * 3600 * 1000) // TTL refreshed on read
    } finally {
      await edge.close()
    }
  }, 60_000)
})
