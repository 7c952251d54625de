/**
 * Side by side, in one run, against the same zero-latency OpenAI-compatible fake on loopback: our natural-language
 * task (as bench/agent-loop.ts: one tool-calling LLM turn, `json.extract`, then a final answer) and the same task on
 * a LangGraph.js peer (prebuilt `createReactAgent` + `MemorySaver`, `ChatOpenAI`, one `json-extract` tool) served by
 * bench/peer-langgraph/server.mjs in a child process. Baseline: the two chat completions of a task sent straight to
 * the fake by the load generator (the floor either side stands on). The peer has a process of its own, our runtime
 * shares this one with the load generator and the fake, so on a small machine throughput favours the peer; the CPU
 * time per task summed over both processes is printed beside it.
 */
import { fork, spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { startFakeOpenAi } from "../packages/cluster/test/FakeOpenAi.js"
import { measure, print, type Result, startRuntime } from "./harness.js"

const peerDir = fileURLToPath(new URL("./peer-langgraph/", import.meta.url))

// the peer is its own npm package (its own lockfile), installed on first use
if (!existsSync(`${peerDir}node_modules`)) {
  const { status } = spawnSync("npm", ["ci", "--prefix", peerDir, "--no-audit", "--no-fund"], { stdio: "inherit" })
  if (status !== 0) throw new Error(`npm ci in ${peerDir} exited with ${status}`)
}

/**
 * The peer server in a child process (plain node: none of this process's flags or loaders), as our load generator
 * and the fake live in this one: its URL, and its CPU time so far (ms). The child exits with this process.
 */
const startPeer = async (baseURL: string) => {
  const child = fork(`${peerDir}server.mjs`, [baseURL], {
    execArgv: [],
    stdio: ["ignore", "ignore", "inherit", "ipc"]
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (message) => resolve((message as { port: number }).port))
    child.once("exit", (code) => reject(new Error(`the peer exited with ${code}`)))
  })
  child.unref()
  child.channel?.unref()
  process.once("exit", () => child.kill())
  return {
    url: `http://127.0.0.1:${port}/tasks`,
    cpu: () =>
      new Promise<number>((resolve) => {
        child.once("message", (message) => resolve((message as { cpu: number }).cpu))
        child.send("cpu")
      })
  }
}

const fake = await startFakeOpenAi()
// every task: a turn asking for json-extract, then a final answer once the tool result is in (as agent-loop.ts)
fake.script((request) =>
  request.body.messages.at(-1).role === "tool"
    ? { kind: "answer", content: "done" }
    : { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":{"b":1}},"path":"a.b"}` }] }
)
const runtime = await startRuntime()
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
const put = (path: string, body: unknown) =>
  fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(body) }).then((r) => {
    if (r.status >= 300) throw new Error(`${path}: ${r.status}`)
  })
await put("/v1/secrets/key", { value: "sk-bench" })
await put("/v1/llms/fake", { llm_id: "fake", endpoint: fake.url, auth: { type: "api_key", key: "key" } })
await put("/v1/settings", { default_llm: "fake" })
const peer = await startPeer(fake.url.replace(/\/chat\/completions$/, ""))

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
const submit = (url: string, init: RequestInit) => async () => {
  const res = await fetch(url, {
    ...init,
    method: "POST",
    // a fresh session per task: the loop itself, not a growing history, is what is measured
    body: JSON.stringify({ input: "extract a.b", session_id: `s${n++}` })
  })
  const json = await res.json() as { status: string; output?: unknown }
  if (json.status !== "succeeded" || !JSON.stringify(json.output).includes("done")) {
    throw new Error(`${url}: task ${json.status}: ${JSON.stringify(json)}`)
  }
}
const peerTask = submit(peer.url, { headers: { "content-type": "application/json" } })
const altanTask = submit(`${runtime.base}/v1/tasks`, { headers })

const FLOOR = "fake LLM: two chat completions"
const PEER = "peer: LangGraph.js createReactAgent + MemorySaver"
const ALTAN = "altan: NL task, 1 tool turn"
const results: Array<Result> = []
// CPU per task over both processes (this one: load generator, fake, our runtime; the peer's child), warm-up included
const cpuPerTask = new Map<Result, number>()
const cpu = async () => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1000 + await peer.cpu()
}
const run = async (name: string, concurrency: number, op: () => Promise<void>, warmup: number) => {
  const before = await cpu()
  const result = await measure(name, concurrency, op, { warmup })
  cpuPerTask.set(result, (await cpu() - before) / (result.count + warmup))
  results.push(result)
}
for (const concurrency of [1, 32]) {
  await run(FLOOR, concurrency, twoCompletions, 200)
  await run(PEER, concurrency, peerTask, 50)
  await run(ALTAN, concurrency, altanTask, 50)
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
      `CPU ms per task, both processes: altan ${ms(altan)}, peer ${ms(langgraph)}, floor ${ms(floor)}`
  )
}
// no graceful stop of the runtime (its live sessions, see agent-loop.ts); the peer child is killed on exit
await fake.close()
process.exit(0)
