/**
 * Side by side, in one run, against the same zero-latency OpenAI-compatible fake on loopback: our natural-language
 * task (as bench/agent-loop.ts: one tool-calling LLM turn, `json.extract`, then a final answer) and the same task on
 * a LangGraph.js peer (prebuilt `createReactAgent` + `MemorySaver`, `ChatOpenAI`, one `json-extract` tool) served by
 * bench/peer-langgraph/server.mjs. Each server runs in a process of its own; the load generator and the fake share
 * this one. Baseline: the two chat completions of a task sent straight to the fake by the load generator (the floor
 * either side stands on). Our task names its one tool (`tools: ["json.extract"]`, as the peer has one), and again
 * without (the model is offered every tool of the tenant, 22 built-ins). The CPU time per task of the server's
 * process is printed beside each.
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { startFakeOpenAi } from "../packages/cluster/test/FakeOpenAi.js"
import { forkServer, measureRounds, print, type Result, type ServerProcess, serveRuntime } from "./harness.js"

const peerDir = fileURLToPath(new URL("./peer-langgraph/", import.meta.url))

// the peer is its own npm package (its own lockfile), installed on first use
if (!existsSync(`${peerDir}node_modules`)) {
  const { status } = spawnSync("npm", ["ci", "--prefix", peerDir, "--no-audit", "--no-fund"], { stdio: "inherit" })
  if (status !== 0) throw new Error(`npm ci in ${peerDir} exited with ${status}`)
}

const fake = await startFakeOpenAi()
// every task: a turn asking for json-extract, then a final answer once the tool result is in (as agent-loop.ts)
fake.script((request) =>
  request.body.messages.at(-1).role === "tool"
    ? { kind: "answer", content: "done" }
    : { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":{"b":1}},"path":"a.b"}` }] }
)
// the peer in plain node (none of this process's flags or loaders); ours as `npm start` runs it
const peer = await forkServer(`${peerDir}server.mjs`, [fake.url.replace(/\/chat\/completions$/, "")], [])
const runtime = await serveRuntime({ llm: fake.url })
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }

// the floor: a task's two chat completions (the tool call, then the answer after the tool result), nothing between
const tools = [{
  type: "function",
  function: {
    name: "json-extract",
    description: "Reads one value out of a JSON document by dotted path.",
    parameters: {
      type: "object",
      properties: { json: { type: "object" }, path: { type: "string" } },
      required: ["json", "path"]
    }
  }
}]
const user = { role: "user", content: "extract a.b" }
const complete = async (messages: ReadonlyArray<unknown>) => {
  const res = await fetch(fake.url, {
    method: "POST",
    headers: { authorization: "Bearer sk-bench", "content-type": "application/json" },
    body: JSON.stringify({ model: "fake-model", messages, tools })
  })
  if (!res.ok) throw new Error(`fake: ${res.status}`)
  const json = await res.json() as { choices: Array<{ message: { content: string | null; tool_calls?: Array<any> } }> }
  return json.choices[0]!.message
}
const twoCompletions = async () => {
  const first = await complete([user])
  const call = first.tool_calls?.[0]
  if (call?.function.name !== "json-extract") throw new Error(`fake: no tool call: ${JSON.stringify(first)}`)
  const second = await complete([user, { role: "assistant", content: null, tool_calls: first.tool_calls }, {
    role: "tool",
    tool_call_id: call.id,
    content: "1"
  }])
  if (second.content !== "done") throw new Error(`fake: no answer: ${JSON.stringify(second)}`)
}

let n = 0
const submit = (url: string, init: RequestInit, extra: Record<string, unknown> = {}) => async () => {
  const res = await fetch(url, {
    ...init,
    method: "POST",
    // a fresh session per task: the loop itself, not a growing history, is what is measured
    body: JSON.stringify({ input: "extract a.b", session_id: `s${n++}`, ...extra })
  })
  const json = await res.json() as { status: string; output?: unknown }
  if (json.status !== "succeeded" || !JSON.stringify(json.output).includes("done")) {
    throw new Error(`${url}: task ${json.status}: ${JSON.stringify(json)}`)
  }
}
const peerTask = submit(`${peer.base}/tasks`, { headers: { "content-type": "application/json" } })
const altanTask = submit(`${runtime.base}/v1/tasks`, { headers }, { tools: ["json.extract"] })
const altanAllTools = submit(`${runtime.base}/v1/tasks`, { headers })

const FLOOR = "fake LLM: two chat completions"
const PEER = "peer: LangGraph.js createReactAgent + MemorySaver"
const ALTAN = "altan: NL task, 1 tool turn"
const ALTAN_ALL = "altan: the same, every tool offered"
const results: Array<Result> = []
// CPU per task of the server's process (measured turns only); the floor's is this process's (generator and fake)
const cpuPerTask = new Map<Result, number>()
const self: ServerProcess["cpu"] = async () => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1000
}
// the scenarios take turns (5 turns of 1 s each), so the machine's drift falls on all of them alike
for (const concurrency of [1, 32]) {
  const measured = await measureRounds([
    { name: FLOOR, op: twoCompletions, meter: self },
    { name: PEER, op: peerTask, warmup: 50, meter: peer.cpu },
    { name: ALTAN, op: altanTask, warmup: 50, meter: runtime.cpu },
    { name: ALTAN_ALL, op: altanAllTools, warmup: 50, meter: runtime.cpu }
  ], concurrency)
  for (const r of measured) {
    results.push(r)
    cpuPerTask.set(r, r.meteredMs!)
  }
}
print(
  results,
  (r) => r.name === FLOOR ? undefined : results.find((b) => b.concurrency === r.concurrency && b.name === FLOOR)
)
console.log()
for (const concurrency of [1, 32]) {
  const find = (name: string) => results.find((r) => r.concurrency === concurrency && r.name === name)!
  const [floor, altan, langgraph] = [find(FLOOR), find(ALTAN), find(PEER)]
  const ms = (r: Result) => cpuPerTask.get(r)!.toFixed(2)
  console.log(
    `${concurrency} in flight: altan/peer throughput ${(altan.perSecond / langgraph.perSecond).toFixed(2)}x ` +
      `(${Math.round(altan.perSecond)}/s vs ${Math.round(langgraph.perSecond)}/s), ` +
      `p99 altan ${altan.p99.toFixed(2)} ms, peer ${langgraph.p99.toFixed(2)} ms; ` +
      `server CPU ms per task: altan ${ms(altan)} (every tool offered: ${ms(find(ALTAN_ALL))}), ` +
      `peer ${ms(langgraph)}; the load generator and fake: ${ms(floor)}`
  )
}
// both servers are killed on exit
await fake.close()
process.exit(0)
