/**
 * Effect operations per task, by the innermost span they ran under: a count, not a timing, so it holds on a noisy
 * machine and shows what a change to the code's Effect plumbing saves. `TASK=plan` (a sync one-step plan, as
 * bench/task-http.ts's) or `TASK=nl` (an NL task with one tool turn, as bench/agent-loop.ts's), `N` tasks (300)
 * after a warm-up, one at a time, over HTTP to the embedded runtime in this process; `GET /healthz` first, as the
 * floor. Each of the fiber runtime's operation handlers is wrapped to count (Effect's internals, patched in this
 * process only), as are the fibers started and the timers set (by anything in the process, the load generator's too).
 *
 *   TASK=nl node --conditions=@altan/source --import tsx bench/internal/op-count.ts
 */
import { createRequire } from "node:module"

const effectRoot = createRequire(import.meta.url).resolve("effect").replace(/dist\/.*$/, "")
const { FiberRuntime } = await import(`${effectRoot}dist/esm/internal/fiberRuntime.js`) as {
  FiberRuntime: { prototype: Record<string, unknown> }
}
const ops = new Map<string, number>()
const fibers = new Map<string, number>()
let timers = 0
let counting = false
const spanOf = (fiber: { currentSpan?: { name: string } }) =>
  fiber.currentSpan ? fiber.currentSpan.name.replace(/\(.+\)/, "(…)") : "(no span)"
const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1)
// the operation handlers are the methods named for their opcodes (`Sync`, `OnSuccess`, `Left`...); `start`,
// `startFork` and `resume` start a fiber (each once per fiber)
const runs = new Set(["start", "startFork", "resume"])
for (const key of Reflect.ownKeys(FiberRuntime.prototype)) {
  if (typeof key !== "string" || (!/^[A-Z]/.test(key) && !runs.has(key))) continue
  const handler = FiberRuntime.prototype[key]
  if (typeof handler !== "function") continue
  FiberRuntime.prototype[key] = function(this: { currentSpan?: { name: string } }, ...args: Array<unknown>) {
    if (counting) bump(runs.has(key) ? fibers : ops, spanOf(this))
    return handler.apply(this, args)
  }
}
const setTimer = globalThis.setTimeout
globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
  if (counting) timers++
  return setTimer(...args)
}) as typeof setTimeout

const { scenarioTask, startRuntime } = await import("../harness.js")
const kind = process.env["TASK"] === "nl" ? "nl" : "plan"
const count = Number(process.env["N"] ?? 300)
const runtime = await startRuntime()
const task = await scenarioTask(runtime, kind)
const healthz = async () => {
  const res = await fetch(`${runtime.base}/healthz`)
  await res.arrayBuffer()
}
for (let i = 0; i < 200; i++) await task()
for (const [name, op] of [["GET /healthz", healthz], [kind === "nl" ? "NL task" : "one-step plan", task]] as const) {
  ops.clear()
  fibers.clear()
  timers = 0
  counting = true
  for (let i = 0; i < count; i++) await op()
  counting = false
  const per = (n: number) => (n / count).toFixed(1)
  const total = [...ops.values()].reduce((a, b) => a + b, 0)
  console.log(
    `${name}: ${per(total)} Effect operations, ${per([...fibers.values()].reduce((a, b) => a + b, 0))} fibers ` +
      `started, ${per(timers)} timers per request; operations by innermost span:`
  )
  for (const [span, n] of [...ops].sort((a, b) => b[1] - a[1])) console.log(`  ${per(n).padStart(7)}  ${span}`)
}
process.exit(0)
