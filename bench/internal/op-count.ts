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

const { startRuntime } = await import("../harness.js")
const { startFakeOpenAi } = await import("../../packages/cluster/test/FakeOpenAi.js")
const kind = process.env["TASK"] ?? "plan"
const count = Number(process.env["N"] ?? 300)
const runtime = await startRuntime()
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
let body: () => string
if (kind === "nl") {
  const fake = await startFakeOpenAi()
  fake.script((request) =>
    request.body.messages.at(-1).role === "tool"
      ? { kind: "answer", content: "done" }
      : { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":{"b":1}},"path":"a.b"}` }] }
  )
  const put = async (path: string, value: unknown) => {
    const res = await fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(value) })
    if (res.status >= 300) throw new Error(`${path}: ${res.status}`)
  }
  await put("/v1/secrets/key", { value: "sk-bench" })
  await put("/v1/llms/fake", { llm_id: "fake", endpoint: fake.url, auth: { type: "api_key", key: "key" } })
  await put("/v1/settings", { default_llm: "fake" })
  let n = 0
  body = () => JSON.stringify({ input: "extract a.b", session_id: `s${n++}`, tools: ["json.extract"] })
} else {
  const plan = JSON.stringify({
    input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
  })
  body = () => plan
}
const task = async () => {
  const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: body() })
  const json = await res.json() as { status: string }
  if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
}
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
