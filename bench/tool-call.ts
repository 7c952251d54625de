/**
 * One tool call through ToolWorker (schema check, egress guard with its address checks and pinned
 * connection, response parsing) to a loopback fake, against a raw undici request to the same fake
 * in the same run. Two fakes, each in its own process as a vendor's API is: one that answers at once (the worst
 * case for the ratio: the call is all overhead), and one that takes 20 ms, as a vendor API does at best.
 */
import type { TenantId } from "@altan/domain/Ids"
import { ToolWorker } from "@altan/domain/ToolWorker"
import { request } from "undici"
import { measure, print, putWeatherTool, type Result, startRuntime, startUpstream } from "./harness.js"

const url = await startUpstream()
const slowUrl = await startUpstream(20)
const runtime = await startRuntime()
const tenant = "bench" as TenantId
const workers = await runtime.run(ToolWorker.client)
await putWeatherTool(runtime, tenant, "weather", url)
await putWeatherTool(runtime, tenant, "weather_slow", slowUrl)
const viaTool = (toolId: string) => {
  const worker = workers(`${tenant}/${toolId}`)
  return () => runtime.run(worker.Execute({ input: { city: "Lyon" } })).then(() => undefined)
}
const raw = (target: string) => async () => {
  const res = await request(`${target}?city=Lyon`)
  await res.body.json()
}

// 5 s each: at 64 in flight the runtime is CPU-bound and a GC pause moves a 3 s figure by several percent
const options = { seconds: 5 }
const results: Array<Result> = []
for (const concurrency of [1, 64]) {
  results.push(await measure("raw undici, instant upstream (baseline)", concurrency, raw(url), options))
  results.push(await measure("tool call, instant upstream", concurrency, viaTool("weather"), options))
}
for (const concurrency of [1, 64]) {
  results.push(await measure("raw undici, 20 ms upstream (baseline)", concurrency, raw(slowUrl), options))
  results.push(await measure("tool call, 20 ms upstream", concurrency, viaTool("weather_slow"), options))
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
process.exit(0)
