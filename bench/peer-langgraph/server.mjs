// The LangGraph.js peer of bench/peer.ts: POST /tasks {input, session_id} runs LangGraph's prebuilt ReAct agent
// (createReactAgent, a MemorySaver checkpointer, thread_id = session_id) with ChatOpenAI against argv[2], the base URL
// of the bench's OpenAI-compatible fake, and one tool, `json-extract`; it answers {status: "succeeded", output}.
// Loopback only, port 0; the port goes to the parent over IPC (and to stdout when run alone).
import { createServer } from "node:http"

const baseURL = process.argv[2]
if (!baseURL) throw new Error("usage: node server.mjs <base URL of the fake, e.g. http://127.0.0.1:1234/v1>")

// Nothing leaves the machine: no LangSmith tracing, and any fetch to another host (a tracer, a tokenizer download)
// fails loudly instead. Set before the libraries load, as the OpenAI client takes the global fetch when built.
for (const key of Object.keys(process.env)) {
  if (/^LANG(CHAIN|SMITH)_/.test(key)) delete process.env[key]
}
process.env.LANGSMITH_TRACING = "false"
process.env.LANGCHAIN_TRACING_V2 = "false"
const loopbackFetch = globalThis.fetch
globalThis.fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input))
  if (url.hostname !== "127.0.0.1" && url.hostname !== "localhost" && url.hostname !== "[::1]") {
    const error = new Error(`bench peer: refused a request to ${url.origin} (loopback only)`)
    console.error(error.message) // a library's background call would swallow the rejection
    return Promise.reject(error)
  }
  return loopbackFetch(input, init)
}

const { tool } = await import("@langchain/core/tools")
const { MemorySaver } = await import("@langchain/langgraph")
const { createReactAgent } = await import("@langchain/langgraph/prebuilt")
const { ChatOpenAI } = await import("@langchain/openai")
const { z } = await import("zod")

/** The value at a dotted path ("a.b.c"; an empty path is the whole document), as JSON. */
const jsonExtract = tool(({ json, path }) => {
  let value = json
  for (const key of path.split(".").filter((k) => k !== "")) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) {
      throw new Error(`path ${path} not found at ${JSON.stringify(key)}`)
    }
    value = value[key]
  }
  return JSON.stringify(value)
}, {
  name: "json-extract",
  description: "Reads one value out of a JSON document by dotted path (\"a.b.c\"); returns it as JSON.",
  schema: z.object({
    json: z.record(z.string(), z.unknown()).describe("The JSON document"),
    path: z.string().describe("Where to read, e.g. \"a.b\"")
  })
})

const agent = createReactAgent({
  llm: new ChatOpenAI({ model: "fake-model", apiKey: "sk-bench", maxRetries: 0, configuration: { baseURL } }),
  tools: [jsonExtract],
  checkpointSaver: new MemorySaver()
})

const reply = (res, status, body) => {
  res.writeHead(status, { "content-type": "application/json" })
  res.end(JSON.stringify(body))
}

const server = createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/tasks") return reply(res, 404, { error: "not found" })
  const chunks = []
  req.on("data", (chunk) => chunks.push(chunk))
  req.on("end", async () => {
    try {
      const { input, session_id } = JSON.parse(Buffer.concat(chunks).toString())
      const state = await agent.invoke(
        { messages: [{ role: "user", content: input }] },
        { configurable: { thread_id: session_id } }
      )
      const last = state.messages.at(-1)
      reply(res, 200, { status: "succeeded", output: typeof last.content === "string" ? last.content : last.text })
    } catch (error) {
      reply(res, 500, { status: "failed", error: String(error?.stack ?? error) })
    }
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address()
  if (process.send) process.send({ port })
  else console.log(`peer listening on http://127.0.0.1:${port}/tasks`)
})
// the bench asks for this process's CPU time (ms), to charge it to the peer's tasks
process.on("message", (message) => {
  if (message !== "cpu") return
  const { system, user } = process.cpuUsage()
  process.send({ cpu: (user + system) / 1000 })
})
process.on("disconnect", () => process.exit(0))
