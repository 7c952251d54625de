/**
 * One tool call through ToolWorker (schema check, egress guard with its address checks and pinned
 * connection, response parsing) to a loopback fake, against a raw undici request to the same fake
 * in the same run. Two fakes: one that answers at once (the worst case for the ratio: the call is all
 * overhead), and one that takes 20 ms, as a vendor API does at best.
 */
import type { TenantId } from "@altan/domain/Ids"
import { catalogId, ToolWorker } from "@altan/domain/ToolWorker"
import { createServer } from "node:http"
import { request } from "undici"
import { measure, print, type Result, startRuntime } from "./harness.js"

const upstream = createServer((_, res) => {
  res.writeHead(200, { "content-type": "application/json" })
  res.end(`{"ok":true,"temperature":21}`)
})
await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r))
const url = `http://127.0.0.1:${(upstream.address() as { port: number }).port}/weather`
const slowUpstream = createServer((_, res) => {
  setTimeout(() => {
    res.writeHead(200, { "content-type": "application/json" })
    res.end(`{"ok":true,"temperature":21}`)
  }, 20)
})
await new Promise<void>((r) => slowUpstream.listen(0, "127.0.0.1", r))
const slowUrl = `http://127.0.0.1:${(slowUpstream.address() as { port: number }).port}/weather`

const runtime = await startRuntime()
const tenant = "bench" as TenantId
const workers = await runtime.run(ToolWorker.client)
await runtime.run(
  workers(catalogId(tenant)).PutTool({
    definition: {
      tool_id: "weather" as any,
      name: "Weather",
      description: "bench",
      parameters: [{ name: "city", type: "string", required: true }],
      endpoint: url,
      method: "GET",
      auth: "none"
    }
  })
)
await runtime.run(
  workers(catalogId(tenant)).PutTool({
    definition: {
      tool_id: "weather_slow" as any,
      name: "Weather (20 ms upstream)",
      description: "bench",
      parameters: [{ name: "city", type: "string", required: true }],
      endpoint: slowUrl,
      method: "GET",
      auth: "none"
    }
  })
)
const viaTool = (toolId: string) => {
  const worker = workers(`${tenant}/${toolId}`)
  return () => runtime.run(worker.Execute({ input: { city: "Lyon" } })).then(() => undefined)
}
const raw = (target: string) => async () => {
  const res = await request(`${target}?city=Lyon`)
  await res.body.json()
}

const results: Array<Result> = []
for (const concurrency of [1, 64]) {
  results.push(await measure("raw undici, instant upstream (baseline)", concurrency, raw(url)))
  results.push(await measure("tool call, instant upstream", concurrency, viaTool("weather")))
}
for (const concurrency of [1, 64]) {
  results.push(await measure("raw undici, 20 ms upstream (baseline)", concurrency, raw(slowUrl)))
  results.push(await measure("tool call, 20 ms upstream", concurrency, viaTool("weather_slow")))
}
print(
  results,
  (r) =>
    r.name.startsWith("tool call")
      ? results.find((b) =>
        b.concurrency === r.concurrency && b.name.startsWith("raw") && b.name.includes(r.name.slice(11))
      )
      : undefined
)
upstream.close()
slowUpstream.close()
process.exit(0)
