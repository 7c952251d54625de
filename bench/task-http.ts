/**
 * A structured task over HTTP (JWT check, AgentSession and its pure tool, back) against baselines measured in the same
 * run: the HTTP floor of the same server (`GET /healthz`), a raw entity round trip on the same cluster
 * (`ToolWorker.Describe`, measured inside the server's process), the engine's floor under the task in servers of
 * their own (`internal/floor.ts`: the same `HttpApi` endpoint and schemas doing no work, then with the task's one
 * persisted message to a new entity: a task's server CPU beyond the latter is our own), and the same one-step task of
 * a tool that goes through the tenant's `Connection` to a tool worker (`bench.template`, `text.template` under another
 * id). The runtime
 * runs in a process of its own (as `npm start` runs it), the load generator in this one; "server CPU ms/op" is the
 * server process's, over the measured turns. A second server keeps its tasks and events in Redis (`REDIS_URL`, default
 * the local one), as a deployment does, and runs the one-step task beside a Redis `PING` from this process; a third
 * also stores the cluster's messages in PostgreSQL (a database of its own on `DATABASE_URL`'s server, default the local
 * one, dropped at the end), as a deployment does.
 */
import { Redis as IORedis } from "ioredis"
import { randomBytes } from "node:crypto"
import pg from "pg"
import { measureRounds, print, type Result, serveFloor, serveRuntime } from "./harness.js"

const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const adminUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const pgAdmin = new pg.Client({ connectionString: adminUrl })
await pgAdmin.connect()
const database = `altan_bench_${randomBytes(6).toString("hex")}`
await pgAdmin.query(`CREATE DATABASE ${database}`)
const databaseUrl = new URL(adminUrl)
databaseUrl.pathname = `/${database}`
const server = await serveRuntime()
const httpFloor = await serveFloor("http")
const floor = await serveFloor()
const onRedis = await serveRuntime({ redis: redisUrl })
const deployed = await serveRuntime({ redis: redisUrl, database: databaseUrl.toString() })
const redis = new IORedis(redisUrl)
const headers = { authorization: `Bearer ${server.token}`, "content-type": "application/json" }
const oneStep = JSON.stringify({
  input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
})
const oneStepThroughWorker = JSON.stringify({
  input: { steps: [{ id: "t", tool: "bench.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
})
const twoSteps = JSON.stringify({
  input: {
    steps: [
      { id: "a", tool: "json.extract", input: { json: { user: { name: "Ada" } }, path: "user.name" } },
      { id: "b", tool: "text.template", input: { template: "hi {{n}}", variables: { n: { $ref: "a.output.value" } } } }
    ]
  }
})

const healthz = async () => {
  const res = await fetch(`${server.base}/healthz`)
  await res.arrayBuffer()
}
const ping = async () => {
  await redis.ping()
}
const task = (body: string, to = server) => async () => {
  const res = await fetch(`${to.base}/v1/tasks`, {
    method: "POST",
    headers: { ...headers, authorization: `Bearer ${to.token}` },
    body
  })
  const json = await res.json() as { status: string }
  if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
}

const results: Array<Result> = []
const serverCpu = new Map<Result, number>()
// the scenarios take turns (5 turns of 1 s each), so the machine's drift falls on all of them alike
for (const concurrency of [1, 32]) {
  const { result } = await server.ask({ engine: concurrency }) as { result: Result }
  results.push(result)
  const measured = await measureRounds(
    [
      { name: "http: GET /healthz (baseline)", op: healthz, meter: server.cpu },
      { name: "floor: HttpApi POST, no work (baseline)", op: task(oneStep, httpFloor), meter: httpFloor.cpu },
      {
        name: "floor: + one persisted message, new entity (baseline)",
        op: task(oneStep, floor),
        meter: floor.cpu
      },
      { name: "task: 1 tool step, sync", op: task(oneStep), meter: server.cpu },
      { name: "task: 1 step via Connection+ToolWorker", op: task(oneStepThroughWorker), meter: server.cpu },
      { name: "task: 2 dependent steps, sync", op: task(twoSteps), meter: server.cpu },
      { name: "redis: PING from the bench (baseline)", op: ping },
      { name: "task: 1 tool step, sync, Redis stores", op: task(oneStep, onRedis), meter: onRedis.cpu },
      {
        name: "task: 1 tool step, sync, PostgreSQL messages + Redis stores",
        op: task(oneStep, deployed),
        meter: deployed.cpu
      }
    ],
    concurrency
  )
  for (const r of measured) {
    results.push(r)
    serverCpu.set(r, r.meteredMs!)
  }
}
print(
  results,
  (r) =>
    r.name.startsWith("task")
      ? results.find((b) => b.concurrency === r.concurrency && b.name.startsWith("http"))
      : undefined
)
console.log()
for (const r of results) {
  const cpu = serverCpu.get(r)
  if (cpu !== undefined) console.log(`${r.name} at ${r.concurrency} in flight: server CPU ${cpu.toFixed(3)} ms/op`)
}
await onRedis.ask("clean")
await deployed.ask("clean")
redis.disconnect()
await pgAdmin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
await pgAdmin.end()
process.exit(0)
