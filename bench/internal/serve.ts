/**
 * Our embedded runtime in a process of its own (as `npm start` runs it, on memory storage), for benchmarks that
 * compare it with a peer server in another process: started by `serveRuntime` in ../harness.ts. Given the base URL
 * of an OpenAI-compatible server (argv[2]), it configures it as the tenant's default LLM. It sends `{base, token}`
 * over IPC when ready, and its CPU time (ms) when asked `"cpu"`.
 */
import { startRuntime } from "../harness.js"

const llm = process.argv[2]
const runtime = await startRuntime()
const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
const put = async (path: string, body: unknown) => {
  const res = await fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(body) })
  if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`)
}
if (llm) {
  await put("/v1/secrets/key", { value: "sk-bench" })
  await put("/v1/llms/fake", { llm_id: "fake", endpoint: llm, auth: { type: "api_key", key: "key" } })
  await put("/v1/settings", { default_llm: "fake" })
}
process.send!({ base: runtime.base, token: runtime.token })
process.on("message", (message) => {
  if (message !== "cpu") return
  const { system, user } = process.cpuUsage()
  process.send!({ cpu: (user + system) / 1000 })
})
process.on("disconnect", () => process.exit(0))
