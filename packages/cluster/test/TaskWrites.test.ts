import * as ExecutionLedger from "@altan/tool/ExecutionLedger"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { startRedis } from "./fault/harness.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * What a task writes to its Redis stores, watched with `MONITOR`: every change of a task is one transaction that
 * carries its events (never an event appended on its own), and a task is written no more often than its changes need:
 * a sync plan is recorded running at once, a pure step once when its call ended, the last step's write ends the plan,
 * and the model's final answer ends a natural-language task.
 */
const url = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `test-${randomBytes(5).toString("hex")}`
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let monitor: Redis
let cleaner: Redis
/** Commands on this test's keys, in order, each as its arguments (the command name first, lower case). */
const seen: Array<ReadonlyArray<string>> = []

beforeAll(async () => {
  fake = await startFakeOpenAi()
  edge = await startEdge(makeProbes(), { redis: { url, prefix } })
  admin = await edge.sign({ tenant_id: "writes", role: "admin" })
  await edge.call("PUT", "/v1/secrets/k", admin, { value: "sk-writes" })
  await edge.call("PUT", "/v1/llms/m", admin, { llm_id: "m", endpoint: fake.url, auth: { type: "api_key", key: "k" } })
  await edge.call("PUT", "/v1/settings", admin, { default_llm: "m" })
  cleaner = new Redis(url)
  monitor = await new Redis(url).monitor()
  monitor.on("monitor", (_time: string, args: Array<string>) => {
    if (args.some((a) => a.startsWith(`${prefix}:`)) || args[0] === "multi" || args[0] === "exec") {
      seen.push(args.map((a, i) => (i === 0 ? a.toLowerCase() : a)))
    }
  })
})

afterAll(async () => {
  monitor.disconnect()
  await edge.close()
  await fake.close()
  const keys = await cleaner.keys(`${prefix}:*`)
  if (keys.length > 0) await cleaner.del(...keys)
  cleaner.disconnect()
})

/**
 * The transactions that touched the task's record or its event log, once MONITOR has caught up, each as the commands
 * inside it; a command on them outside a transaction, as a transaction of its own (but the submit's read, `GETEX`).
 */
const writesOf = async (taskId: string) => {
  // MONITOR lags the commands a little: wait until it shows the task's terminal event
  for (let i = 0; i < 100; i++) {
    if (
      seen.some((c) =>
        c[0] === "xadd" && c[1]!.endsWith(`:${taskId}`) && /"type":"task\.(succeeded|failed)"/.test(c.at(-1)!)
      )
    ) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const ofTask = (c: ReadonlyArray<string>) => c[1]?.endsWith(`:${taskId}`) === true
  const transactions: Array<Array<ReadonlyArray<string>>> = []
  let open: Array<ReadonlyArray<string>> | undefined
  for (const command of seen) {
    if (command[0] === "multi") open = []
    else if (command[0] === "exec") {
      if (open?.some(ofTask)) transactions.push(open)
      open = undefined
    } else if (open) open.push(command)
    else if (ofTask(command) && command[0] !== "getex") transactions.push([command])
  }
  return transactions
}
const eventTypes = (transaction: ReadonlyArray<ReadonlyArray<string>>) =>
  transaction.filter((c) => c[0] === "xadd").map((c) => JSON.parse(c.at(-1)!).type as string)
const isRecordWrite = (transaction: ReadonlyArray<ReadonlyArray<string>>) =>
  transaction.some((c) => c[0] === "set" && c[1]!.includes(":tr:"))

describe("a task's writes", () => {
  it("a one-step plan of a pure tool: recorded running, then its step and its end in one write", async () => {
    const res = await edge.call("POST", "/v1/tasks", admin, {
      input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
    })
    expect(res.body.status, res.text).toBe("succeeded")
    const writes = await writesOf(res.body.task_id)
    // every event rides with a record write
    expect(writes.every(isRecordWrite)).toBe(true)
    expect(writes.map(eventTypes)).toEqual([
      ["task.queued", "task.started"],
      ["tool.started", "tool.completed", "task.succeeded"]
    ])
  })

  it("a step through the tool worker: recorded running before the call, its end and the task's after", async () => {
    const res = await edge.call("POST", "/v1/tasks", admin, {
      input: {
        steps: [
          { id: "a", tool: "text.template", input: { template: "{{n}}", variables: { n: "x" } } },
          { id: "b", tool: "probe.echo", input: { value: { $ref: "a.output.text" } } }
        ]
      }
    })
    expect(res.body.status, res.text).toBe("succeeded")
    expect(res.body.output).toMatchObject({ value: "x" })
    const writes = await writesOf(res.body.task_id)
    expect(writes.every(isRecordWrite)).toBe(true)
    expect(writes.map(eventTypes)).toEqual([
      ["task.queued", "task.started"],
      ["tool.started", "tool.completed"],
      // a call with effects is recorded running before it is made, so a runner dying mid-call knows it was made
      ["tool.started"],
      ["tool.completed", "task.succeeded"]
    ])
  })

  it("a natural-language task: its input in its first write, the final answer ends it", async () => {
    fake.script(
      { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":1},"path":"a"}` }] },
      { kind: "answer", content: "one" }
    )
    const res = await edge.call("POST", "/v1/tasks", admin, { input: "what is a?", session_id: "nl" })
    expect(res.body.status, res.text).toBe("succeeded")
    expect(res.body.output).toBe("one")
    const writes = await writesOf(res.body.task_id)
    expect(writes.every(isRecordWrite)).toBe(true)
    expect(writes.map(eventTypes)).toEqual([
      ["task.queued", "task.started"],
      ["llm.completed"],
      ["tool.started", "tool.completed"],
      // the tool results join the exchange
      [],
      ["llm.completed", "task.succeeded"]
    ])
    // the first write holds the input; the last one adds the exchange to the session's conversation
    // (MONITOR shows the record as its JSON text, which ioredis may not unescape exactly: looked at as text)
    const record = (t: ReadonlyArray<ReadonlyArray<string>>) => t.find((c) => c[0] === "set")![2]!
    expect(record(writes[0]!)).toContain(`"transcript":[{"role":"user","content":"what is a?"}]`)
    const last = writes.at(-1)!
    expect(last.some((c) => c[0] === "rpush" && c[1]!.includes(":sm:"))).toBe(true)
    expect(record(last)).toContain(`"status":"succeeded"`)
    expect(record(last)).toContain(`"output":"one"`)
    // and the next task of the session sees it
    fake.script({ kind: "answer", content: "still one" })
    const next = await edge.call("POST", "/v1/tasks", admin, { input: "again?", session_id: "nl" })
    expect(next.body.status, next.text).toBe("succeeded")
    const sent = fake.received.at(-1)!.body.messages.map((m: { content: string | null }) => m.content)
    expect(sent).toEqual(expect.arrayContaining(["what is a?", "one", "again?"]))
  })
})

describe("a write in flight", () => {
  // its own redis-server: the test holds its writes back with CLIENT PAUSE
  it("a cancel while the write that ends the task is in flight: the log and the record tell the same end", async () => {
    const redis = await startRedis()
    const probes = makeProbes()
    // the tool service's ledger in memory: the call's end touches nothing the pause holds back, only the task's write
    const edge = await startEdge(probes, {
      redis: { url: redis.url, prefix: "race" },
      ledger: ExecutionLedger.layerMemory()
    })
    const pauser = new Redis(redis.url)
    try {
      const token = await edge.sign({ tenant_id: "race", role: "admin" })
      const res = await edge.call("POST", "/v1/tasks", token, {
        mode: "async",
        input: { steps: [{ id: "a", tool: "probe.effect", input: { label: "race", ms: 300 } }] }
      })
      expect(res.status, res.text).toBe(202)
      const taskId: string = res.body.task_id
      await probes.called("probe.effect")
      // the call answers in 300 ms; the write that records it and ends the task waits in Redis until the pause ends
      await pauser.call("CLIENT", "PAUSE", "1500", "WRITE")
      await new Promise((resolve) => setTimeout(resolve, 700))
      const cancel = await edge.call("POST", `/v1/tasks/${taskId}/cancel`, token)
      // the write in flight was not given up: the task had ended, and the cancel answers it so (or that it ended)
      expect([200, 409], cancel.text).toContain(cancel.status)
      const task = await edge.until(taskId, token, (t) => t.status !== "running" && t.status !== "queued")
      const events = (await edge.call("GET", `/v1/tasks/${taskId}/events`, token)).text
      const ends = [...events.matchAll(/^event: (task\.(?:succeeded|failed|cancelled))$/gm)].map((m) => m[1])
      expect(ends).toEqual([`task.${task.status}`])
      expect(task.status).toBe("succeeded")
    } finally {
      pauser.disconnect()
      await edge.close()
      await redis.close()
    }
  }, 30_000)
})
