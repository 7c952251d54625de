/**
 * The cost of the Connection actor around a tool call (tenant settings and credential lookup, rate budget,
 * circuit breaker, retry bookkeeping, metrics) against calling the tool worker directly, in the same run: the
 * same GET tool, the same loopback upstream that answers at once, so the difference is all overhead.
 */
import { Connection } from "@altan/domain/Connection"
import type { TenantId } from "@altan/domain/Ids"
import { ToolWorker } from "@altan/domain/ToolWorker"
import { measure, print, putWeatherTool, type Result, startRuntime, startUpstream } from "./harness.js"

const runtime = await startRuntime()
const tenant = "bench" as TenantId
const provider = "weather"
const workers = await runtime.run(ToolWorker.client)
const connections = await runtime.run(Connection.client)
await putWeatherTool(runtime, tenant, "weather", await startUpstream(), provider)
// a budget far above what the bench reaches: every call goes through the budget's bookkeeping, none waits
const settings = await fetch(`${runtime.base}/v1/settings`, {
  method: "PUT",
  headers: { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" },
  body: JSON.stringify({
    providers: { [provider]: { rate_limit: { requests: 1_000_000, per_seconds: 1 }, daily_limit: 1_000_000_000 } }
  })
})
if (settings.status !== 200) throw new Error(`PUT /v1/settings: ${settings.status} ${await settings.text()}`)

const input = { city: "Lyon" }
const worker = workers(`${tenant}/weather`)
const direct = () => runtime.run(worker.Execute({ input })).then(() => undefined)
const connection = connections(`${tenant}/${provider}`)
const viaConnection = () =>
  runtime.run(connection.Invoke({ tool_id: "weather", input, policy: { idempotent: true, idempotency_key: false } }))
    .then(() => undefined)

const results: Array<Result> = []
for (const concurrency of [1, 64]) {
  results.push(await measure("ToolWorker.Execute, direct (baseline)", concurrency, direct))
  results.push(await measure("Connection.Invoke -> ToolWorker.Execute", concurrency, viaConnection))
}
print(
  results,
  (r) =>
    r.name.startsWith("Connection")
      ? results.find((b) => b.concurrency === r.concurrency && b.name.startsWith("ToolWorker"))
      : undefined
)
const signed = (ms: number) => `${ms >= 0 ? "+" : ""}${ms.toFixed(2)} ms`
for (const concurrency of [1, 64]) {
  const [base, via] = results.filter((r) => r.concurrency === concurrency)
  // sequential calls show the added latency; saturated ones (the CPU is the limit) the added work per call
  console.log(
    `${concurrency} in flight: ${signed(via!.p50 - base!.p50)} p50, ${signed(via!.p99 - base!.p99)} p99, ` +
      `${signed(1000 / via!.perSecond - 1000 / base!.perSecond)} per call at the measured throughput`
  )
}
process.exit(0)
