/**
 * Our embedded runtime in a process of its own (as `npm start` runs it, on memory storage; with `BENCH_REDIS_URL`
 * its tasks, conversations and events in that Redis, under a prefix of its own that it deletes when asked `"clean"`;
 * with `BENCH_DATABASE_URL` the cluster's messages in that PostgreSQL database, see `sqlSharding`), for benchmarks
 * that compare it with a baseline or a peer server in another process: started by `serveRuntime` in ../harness.ts.
 * Given the base URL of an OpenAI-compatible server (argv[2]), it configures it as the tenant's default LLM. It sends
 * `{base, token}` over IPC when ready, its CPU time (ms) when asked `"cpu"`, its heap after a full collection when
 * asked `"heap"`, and when asked `{engine: n}` measures the raw entity round trip (`ToolWorker.Describe`) at n in
 * flight inside itself and sends the `Result`.
 */
import { ToolWorker } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import { Redis as IORedis } from "ioredis"
import { measure, sqlSharding, startRuntime } from "../harness.js"

const llm = process.argv[2]
const redisUrl = process.env["BENCH_REDIS_URL"]
const prefix = `bench${process.pid}x${Date.now()}`
const databaseUrl = process.env["BENCH_DATABASE_URL"]
const runtime = await startRuntime({
  ...(redisUrl ? { redis: { url: redisUrl, prefix } } : {}),
  ...(databaseUrl ? { sharding: sqlSharding(databaseUrl) } : {})
})
/** Deletes what this run wrote to Redis. */
const cleanUp = async () => {
  if (!redisUrl) return
  const client = new IORedis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await client.connect()
    let cursor = "0"
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000)
      if (keys.length > 0) await client.unlink(...keys)
      cursor = next
    } while (cursor !== "0")
  } finally {
    client.disconnect()
  }
}
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
const put = async (path: string, body: unknown) => {
  const res = await fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(body) })
  if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`)
}
if (llm) {
  await put("/v1/secrets/key", { value: "sk-bench" })
  await put("/v1/llms/fake", { llm_id: "fake", endpoint: llm, auth: { type: "api_key", key: "key" } })
  await put("/v1/settings", { default_llm: "fake" })
}
process.send!({ base: runtime.base, token: runtime.token })
const describe = await runtime.run(Effect.map(ToolWorker.client, (client) => client("bench/text.template")))
const engine = () => runtime.run(describe.Describe()).then(() => undefined)
process.on("message", (message: unknown) => {
  if (message === "clean") {
    void cleanUp().then(() => process.send!({ cleaned: true }))
  } else if (message === "heap") {
    // after a full collection (the bench runs its processes with --expose-gc)
    globalThis.gc?.()
    globalThis.gc?.()
    process.send!({ heap: process.memoryUsage().heapUsed })
  } else if (message === "cpu") {
    const { system, user } = process.cpuUsage()
    process.send!({ cpu: (user + system) / 1000 })
  } else if (typeof message === "object" && message !== null && "engine" in message) {
    void measure("engine: entity round trip (baseline)", Number(message.engine), engine).then((result) =>
      process.send!({ result })
    )
  }
})
process.on("disconnect", () => process.exit(0))
// exits, not killed, so a profile (`--cpu-prof`) is written
process.on("SIGTERM", () => process.exit(0))
