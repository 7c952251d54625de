/**
 * A structured task over HTTP (JWT check, AgentSession, Connection, ToolWorker, back) against two
 * baselines measured in the same run: the HTTP floor of the same server (`GET /healthz`) and a raw
 * entity round trip on the same cluster (`ToolWorker.Describe`).
 */
import { ToolWorker } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import { measure, print, type Result, startRuntime } from "./harness.js"

const runtime = await startRuntime()
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
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

const describe = await runtime.run(Effect.map(ToolWorker.client, (client) => client("bench/text.template")))
const engine = () => runtime.run(describe.Describe()).then(() => undefined)
const healthz = async () => {
  const res = await fetch(`${runtime.base}/healthz`)
  await res.arrayBuffer()
}
const task = (body: string) => async () => {
  const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body })
  const json = await res.json() as { status: string }
  if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
}

const results: Array<Result> = []
for (const concurrency of [1, 32]) {
  results.push(await measure("engine: entity round trip (baseline)", concurrency, engine))
  results.push(await measure("http: GET /healthz (baseline)", concurrency, healthz))
  results.push(await measure("task: 1 tool step, sync", concurrency, task(oneStep)))
  results.push(await measure("task: 2 dependent steps, sync", concurrency, task(twoSteps)))
}
print(
  results,
  (r) =>
    r.name.startsWith("task")
      ? results.find((b) => b.concurrency === r.concurrency && b.name.startsWith("http"))
      : undefined
)
await runtime.stop()
process.exit(0)
