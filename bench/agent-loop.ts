/**
 * Natural-language tasks (one tool-calling LLM turn + a final answer) against a zero-latency
 * OpenAI-compatible fake on loopback and an in-process tool, against the raw engine measured in the
 * same run: a no-op entity on the same cluster. (Heap per idle session: bench/sessions.ts.)
 */
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Effect from "effect/Effect"
import { startFakeOpenAi } from "../packages/cluster/test/FakeOpenAi.js"
import { measure, print, type Result, startRuntime } from "./harness.js"

// in the agent shard group, like AgentSession (an unannotated entity lands in "default", which no runner hosts)
const Noop = Entity.make("Noop", [Rpc.make("Ping")]).annotate(ClusterSchema.ShardGroup, () => "agent")
const NoopLive = Noop.toLayer(Effect.succeed(Noop.of({ Ping: () => Effect.void })), { maxIdleTime: "1 hour" })

const fake = await startFakeOpenAi()
const runtime = await startRuntime({ extra: NoopLive })
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
const put = (path: string, body: unknown) =>
  fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(body) }).then((r) => {
    if (r.status >= 300) throw new Error(`${path}: ${r.status}`)
  })
await put("/v1/secrets/key", { value: "sk-bench" })
await put("/v1/llms/fake", { llm_id: "fake", endpoint: fake.url, auth: { type: "api_key", key: "key" } })
await put("/v1/settings", { default_llm: "fake" })
// every task: a turn asking for json.extract, then a final answer once the tool result is in
fake.script((request) =>
  request.body.messages.at(-1).role === "tool"
    ? { kind: "answer", content: "done" }
    : { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":{"b":1}},"path":"a.b"}` }] }
)

let n = 0
const task = async () => {
  const res = await fetch(`${runtime.base}/v1/tasks`, {
    method: "POST",
    headers,
    // a fresh session per task: the loop itself, not a growing history, is what is measured
    body: JSON.stringify({ input: "extract a.b", session_id: `s${n++}` })
  })
  const json = await res.json() as { status: string }
  if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
}
const noop = await runtime.run(Effect.map(Noop.client, (client) => client))
let k = 0
const ping = () => runtime.run(noop(`n${k++ % 64}`).Ping())

const results: Array<Result> = []
for (const concurrency of [1, 64]) {
  results.push(await measure("engine: no-op entity (baseline)", concurrency, ping))
  results.push(await measure("agent: NL task, 1 tool turn + answer", concurrency, task, { warmup: 50 }))
}
print(
  results,
  (r) => r.name.startsWith("agent") ? results.find((b) => b.concurrency === r.concurrency && b !== r) : undefined
)

// no graceful stop: the live sessions are shut down with the process
await fake.close()
process.exit(0)
