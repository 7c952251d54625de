/**
 * A structured task over HTTP (JWT check, AgentSession, Connection, ToolWorker, back) against two baselines measured
 * in the same run: the HTTP floor of the same server (`GET /healthz`) and a raw entity round trip on the same cluster
 * (`ToolWorker.Describe`, measured inside the server's process). The runtime runs in a process of its own (as
 * `npm start` runs it), the load generator in this one; "server CPU ms/op" is the server process's.
 */
import { measure, print, type Result, serveRuntime } from "./harness.js"

const server = await serveRuntime()
const headers = { authorization: `Bearer ${server.token}`, "content-type": "application/json" }
const oneStep = JSON.stringify({
  input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
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
const task = (body: string) => async () => {
  const res = await fetch(`${server.base}/v1/tasks`, { method: "POST", headers, body })
  const json = await res.json() as { status: string }
  if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
}

const results: Array<Result> = []
const serverCpu = new Map<Result, number>()
const run = async (name: string, concurrency: number, op: () => Promise<void>) => {
  const before = await server.cpu()
  const result = await measure(name, concurrency, op)
  serverCpu.set(result, (await server.cpu() - before) / (result.count + 200))
  results.push(result)
}
for (const concurrency of [1, 32]) {
  const { result } = await server.ask({ engine: concurrency }) as { result: Result }
  results.push(result)
  await run("http: GET /healthz (baseline)", concurrency, healthz)
  await run("task: 1 tool step, sync", concurrency, task(oneStep))
  await run("task: 2 dependent steps, sync", concurrency, task(twoSteps))
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
process.exit(0)
