/**
 * One tool call through ToolWorker (schema check, egress guard with its address checks and pinned
 * connection, response parsing) to a loopback fake, against a raw undici request to the same fake
 * in the same run.
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
const weather = workers(`${tenant}/weather`)
const viaTool = () => runtime.run(weather.Execute({ input: { city: "Lyon" } })).then(() => undefined)
const raw = async () => {
  const res = await request(`${url}?city=Lyon`)
  await res.body.json()
}

const results: Array<Result> = []
for (const concurrency of [1, 64]) {
  results.push(await measure("raw undici request (baseline)", concurrency, raw))
  results.push(await measure("ToolWorker.Execute + egress guard", concurrency, viaTool))
}
print(
  results,
  (r) => r.name.startsWith("ToolWorker") ? results.find((b) => b.concurrency === r.concurrency && b !== r) : undefined
)
upstream.close()
process.exit(0)
