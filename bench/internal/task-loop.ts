/**
 * One scenario of bench/task-http.ts (a sync one-step plan over HTTP, `TASK=plan`) or of bench/agent-loop.ts (an NL
 * task with one tool turn, `TASK=nl`), for a profiler: `C` in flight for `S` seconds, then its throughput, latency,
 * this process's CPU per task, the spans a task opens and the wall time in each. Run it under `--cpu-prof` and read the profile with
 * `node bench/internal/profile-summary.mjs <file>.cpuprofile` (see docs/benchmarks.md).
 */
import { countingTracer, measure, scenarioTask, startRuntime } from "../harness.js"

const kind = process.env["TASK"] === "nl" ? "nl" : "plan"
const concurrency = Number(process.env["C"] ?? 1)
const seconds = Number(process.env["S"] ?? 10)
const spans = countingTracer()
const runtime = await startRuntime({ tracer: spans.tracer })
const task = await scenarioTask(runtime, kind)
for (let i = 0; i < 300; i++) await task()
spans.counts.clear()
spans.durations.clear()
const before = process.cpuUsage()
const result = await measure(kind, concurrency, task, { seconds, warmup: 0 })
const cpu = process.cpuUsage(before)
const opened = [...spans.counts.values()].reduce((a, b) => a + b, 0)
console.log(
  `${kind} at ${concurrency} in flight: ${Math.round(result.perSecond)}/s, p50 ${result.p50.toFixed(2)} ms, ` +
    `p99 ${result.p99.toFixed(2)} ms; CPU ${((cpu.user + cpu.system) / 1000 / result.count).toFixed(2)} ms per task ` +
    `(this process: runtime and load generator); ${(opened / result.count).toFixed(1)} spans per task`
)
// wall time in each span per task (nested spans included; at 1 in flight this is where a task's time goes)
for (const [name, ns] of [...spans.durations].sort((a, b) => Number(b[1] - a[1]))) {
  const ms = Number(ns) / 1e6 / result.count
  if (ms >= 0.01) {
    console.log(`  ${ms.toFixed(3).padStart(8)} ms  ${(spans.counts.get(name)! / result.count).toFixed(2)} x ${name}`)
  }
}
const { heapUsed, rss } = process.memoryUsage()
console.log(`heap ${Math.round(heapUsed / 1e6)} MB, resident set ${Math.round(rss / 1e6)} MB`)
process.exit(0)
