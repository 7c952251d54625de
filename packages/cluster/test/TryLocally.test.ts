import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { startNpmStart } from "../../../testing/npmStart.js"
import { startFakeOpenAi } from "./FakeOpenAi.js"

/**
 * README's "Try an agent locally", as written: `npm start`'s own command in a process of its own with the README's
 * environment, then the README's curl commands against it (on a free loopback port instead of 8080). With
 * `DEMO_LLM=1` the demo model answers natural-language tasks through the real path; with the README's Ollama setup,
 * a loopback OpenAI-compatible server stands in for Ollama on a free port instead of 11434.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url))
const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")

const section = (() => {
  const start = readme.indexOf("### Try an agent locally")
  expect(start).toBeGreaterThan(-1)
  return readme.slice(start, readme.indexOf("\n### ", start + 1))
})()
const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!)
const blockWith = (text: string) => {
  const block = blocks.find((b) => b.includes(text))
  expect(block, `README block with ${text}`).toBeDefined()
  return block!
}

/** The environment of the block's `... npm start` line. */
const envOf = (block: string): Record<string, string> => {
  const line = /^(.*) npm start$/m.exec(block)
  expect(line, block).not.toBeNull()
  return Object.fromEntries(line![1]!.split(/\s+/).map((pair) => pair.split("=") as [string, string]))
}

interface Command {
  readonly method: string
  readonly path: string
  readonly body: string | undefined
}

/** The curl commands of a README block: method, path and body, as written. */
const curlsOf = (block: string): Array<Command> =>
  block.replace(/\\\n\s*/g, " ").split("\n").filter((line) => line.startsWith("curl ")).map((line) => ({
    method: /-X (\w+)/.exec(line)?.[1] ?? (line.includes(" -d '") ? "POST" : "GET"),
    path: /http:\/\/localhost:8080(\/\S*)/.exec(line)![1]!,
    body: /-d '([^']*)'/.exec(line)?.[1]
  }))

/** `npm start` with `env`, on free loopback ports (`testing/npmStart.ts`); its printed admin token. */
const startAltan = async (env: Record<string, string>) => {
  const { stop, output, token, url: base } = await startNpmStart(env)
  const auth = token
  /** One README command against this process, `rewrite` applied to its body. */
  const run = async (command: Command, rewrite: (body: string) => string = (b) => b) => {
    const res = await fetch(`${base}${command.path}`, {
      method: command.method,
      headers: {
        authorization: `Bearer ${auth}`,
        ...(command.body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(command.body !== undefined ? { body: rewrite(command.body) } : {})
    })
    const text = await res.text()
    return { status: res.status, text, body: text === "" ? undefined : JSON.parse(text) }
  }
  return { output, run, stop }
}

describe("the demo model (DEMO_LLM=1 npm start)", () => {
  let altan: Awaited<ReturnType<typeof startAltan>>
  const task = (body: Record<string, unknown>) =>
    altan.run({ method: "POST", path: "/v1/tasks", body: JSON.stringify(body) })

  beforeAll(async () => {
    const env = envOf(blockWith("DEMO_LLM=1 npm start"))
    expect(env).toEqual({ DEMO_LLM: "1" })
    altan = await startAltan(env)
  }, 120_000)
  afterAll(() => altan?.stop(), 30_000)

  it("says at start that it is on, and how to use it", () => {
    expect(altan.output()).toContain("Demo model on (DEMO_LLM=1): LLM \"demo\" is a scripted stand-in, not a real LLM")
    expect(altan.output()).toContain("other tenants pass \"llm_id\": \"demo\"")
  })

  it("runs README's task: one tool call through the gateway, then an answer with its result", async () => {
    const block = blocks[blocks.indexOf(blockWith("DEMO_LLM=1 npm start")) + 1]!
    const [command] = curlsOf(block)
    const documented = JSON.parse(/"output": ("(?:[^"\\]|\\.)*")/.exec(section)![1]!)
    const res = await altan.run(command!)
    expect(res.status, res.text).toBe(200)
    const result = res.body
    expect(result).toMatchObject({ status: "succeeded", llm_id: "demo", output: documented })
    expect(result.output).toMatch(/^\[demo model\] /)
    expect(result.output).toContain("Hello, Ada!")
    expect(result.steps).toMatchObject([{
      tool: "text.template",
      status: "succeeded",
      input: { template: "Hello, {{name}}!", variables: { name: "Ada" } },
      output: { text: "Hello, Ada!" }
    }])
    // two turns, each one call to the endpoint through the gateway
    expect(result.turns.map((t: any) => [t.llm_id, t.tool_calls, t.attempts.map((a: any) => a.outcome)])).toEqual([
      ["demo", ["text.template"], ["ok"]],
      ["demo", [], ["ok"]]
    ])
    expect(result.usage).toMatchObject({ llm_calls: 2, tool_calls: 1 })
    expect(result.usage.prompt_tokens).toBeGreaterThan(0)
  }, 60_000)

  it("is any tenant's LLM `demo` by id, and keeps to the task's tools", async () => {
    const res = await task({
      input: "Extract the age from this JSON: {\"name\": \"Ada\", \"age\": 36}",
      llm_id: "demo",
      tools: ["json.extract"]
    })
    expect(res.status, res.text).toBe(200)
    expect(res.body).toMatchObject({
      status: "succeeded",
      llm_id: "demo",
      steps: [{ tool: "json.extract", status: "succeeded", output: { value: 36, found: true } }]
    })
    expect(res.body.output).toBe("[demo model] I called json.extract; it returned {\"value\":36,\"found\":true}")
    const llms = await altan.run({ method: "GET", path: "/v1/llms", body: undefined })
    expect(llms.body).toEqual([{
      llm_id: "demo",
      endpoint: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions$/),
      auth: { type: "none" },
      model: "demo"
    }])
  }, 60_000)

  it("is reachable by the LLM calls only: a tool is refused its endpoint, even on the tenant's allowlist", async () => {
    const [demo] = (await altan.run({ method: "GET", path: "/v1/llms", body: undefined })).body
    const host = new URL(demo.endpoint).host
    const settings = (body: unknown) => altan.run({ method: "PUT", path: "/v1/settings", body: JSON.stringify(body) })
    expect((await settings({ egress_allowlist: [host] })).status).toBe(200)
    try {
      const res = await task({
        input: {
          steps: [{ id: "call", tool: "http.request", input: { url: demo.endpoint, method: "POST", body: "{}" } }]
        }
      })
      expect(res.status, res.text).toBe(200)
      expect(res.body, res.text).toMatchObject({
        status: "failed",
        steps: [{ tool: "http.request", status: "failed" }]
      })
      // past the tenant's allowlist, refused as loopback: the tools' guard is not the one the demo model widened
      expect(res.body.steps[0].error.message).toMatch(/^egress_denied: 127\.0\.0\.1 is loopback/)
    } finally {
      await settings({})
    }
  }, 60_000)

  it("answers a text no rule applies to directly, marked as the demo model", async () => {
    const res = await task({ input: "Tell me a joke about compilers" })
    expect(res.status, res.text).toBe(200)
    expect(res.body).toMatchObject({ status: "succeeded", llm_id: "demo", steps: [] })
    expect(res.body.output).toMatch(/^\[demo model\] I am Altan's scripted demo model, not a real LLM/)
    expect(res.body.turns).toHaveLength(1)
  }, 60_000)
})

describe("a local model server (README's Ollama setup)", () => {
  const documentedHost = "127.0.0.1:11434"
  let ollama: Awaited<ReturnType<typeof startFakeOpenAi>>
  let altan: Awaited<ReturnType<typeof startAltan>>
  let moveTo: (text: string) => string

  beforeAll(async () => {
    ollama = await startFakeOpenAi()
    const host = new URL(ollama.url).host
    moveTo = (text) => text.replaceAll(documentedHost, host)
    const env = envOf(blockWith(`EGRESS_ALLOW_HOSTS=${documentedHost} npm start`))
    expect(env).toEqual({ EGRESS_ALLOW_HOSTS: documentedHost })
    altan = await startAltan({ EGRESS_ALLOW_HOSTS: moveTo(env.EGRESS_ALLOW_HOSTS!) })
  }, 120_000)
  afterAll(async () => {
    await altan?.stop()
    await ollama?.close()
  }, 30_000)

  it("takes README's LLM configuration as written and runs its task through it", async () => {
    ollama.script((request) =>
      request.body.messages.at(-1).role === "tool"
        ? { kind: "answer", content: `Done: ${request.body.messages.at(-1).content}` }
        : {
          kind: "tools",
          calls: [{ name: "text-template", arguments: `{"template":"Hello, {{name}}!","variables":{"name":"Ada"}}` }]
        }
    )
    const commands = curlsOf(blockWith("/v1/llms/ollama"))
    expect(commands.map((c) => `${c.method} ${c.path}`)).toEqual([
      "PUT /v1/llms/ollama",
      "PUT /v1/settings",
      "POST /v1/tasks"
    ])
    const documented = JSON.parse(commands[0]!.body!)
    expect(documented).toMatchObject({
      auth: { type: "none" },
      endpoint: `http://${documentedHost}/v1/chat/completions`
    })
    const results = []
    for (const command of commands) {
      const res = await altan.run(command, moveTo)
      expect(res.status, `${command.method} ${command.path}: ${res.text}`).toBeLessThan(300)
      results.push(res.body)
    }
    const result = results[2]
    expect(result).toMatchObject({
      status: "succeeded",
      llm_id: "ollama",
      tools: ["text.template"],
      steps: [{ tool: "text.template", status: "succeeded", output: { text: "Hello, Ada!" } }]
    })
    expect(result.output).toBe("Done: {\"output\":{\"text\":\"Hello, Ada!\"}}")
    expect(ollama.received).toHaveLength(2)
    for (const request of ollama.received) {
      expect(request.path).toBe("/v1/chat/completions")
      expect(request.body.model).toBe(documented.model)
      // no key stored: the client's placeholder, as README says
      expect(request.authorization).toBe("Bearer unused")
      expect(request.body.tools.map((t: any) => t.function.name)).toEqual(["text-template"])
    }
  }, 60_000)

  it("takes README's vLLM configuration as written", async () => {
    const [command] = curlsOf(blockWith("/v1/llms/vllm"))
    const res = await altan.run(command!)
    expect(res.status, res.text).toBe(200)
    expect(res.body).toEqual(JSON.parse(command!.body!))
  })
})
