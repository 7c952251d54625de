import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createServer, type Server } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * Every configuration and connection route called with tenant B's token on tenant A's objects:
 * 404 or no effect. Meanwhile everything the process writes (logs included) and every answer is
 * scanned for the secret values, which must appear nowhere.
 */
const secrets = {
  llmKey: "sk-isolation-llm-key-9d1f",
  slackToken: "xoxb-isolation-slack-7c2e",
  clientSecret: "isolation-client-secret-41ab"
}
const captured: Array<string> = []
const restore: Array<() => void> = []
let edge: Awaited<ReturnType<typeof startEdge>>
let llm: Awaited<ReturnType<typeof startFakeOpenAi>>
let slack: Server
let adminA = ""
let adminB = ""
let memberB = ""
const answers: Array<string> = []

const call = async (method: string, path: string, token: string, body?: unknown) => {
  const res = await edge.call(method, path, token, body)
  answers.push(res.text)
  return res
}

beforeAll(async () => {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream)
    stream.write = ((chunk: any, ...rest: Array<any>) => {
      captured.push(String(chunk))
      return write(chunk, ...rest)
    }) as typeof stream.write
    restore.push(() => (stream.write = write))
  }
  // the Effect logger writes through console, which the test runner intercepts before the streams
  for (const level of ["log", "info", "warn", "error", "debug", "trace"] as const) {
    const original = console[level]
    console[level] = (...args: Array<unknown>) => {
      captured.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a) ?? String(a))).join(" "))
      original(...args)
    }
    restore.push(() => (console[level] = original))
  }
  llm = await startFakeOpenAi()
  slack = createServer((req, res) => {
    req.resume().on("end", () => {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ ok: true, channel: "C1", ts: "1.2" }))
    })
  })
  await new Promise<void>((r) => slack.listen(0, "127.0.0.1", r))
  edge = await startEdge(makeProbes())
  adminA = await edge.sign({ tenant_id: "iso-a", role: "admin" })
  adminB = await edge.sign({ tenant_id: "iso-b", role: "admin" })
  memberB = await edge.sign({ tenant_id: "iso-b", role: "member" })
  const slackBase = `http://127.0.0.1:${(slack.address() as { port: number }).port}/api`

  // tenant A's objects
  expect((await call("PUT", "/v1/secrets/llm_key", adminA, { value: secrets.llmKey })).status).toBe(204)
  expect((await call("PUT", "/v1/secrets/slack_token", adminA, { value: secrets.slackToken })).status).toBe(204)
  expect((await call("PUT", "/v1/secrets/app_secret", adminA, { value: secrets.clientSecret })).status).toBe(204)
  expect(
    (await call("PUT", "/v1/llms/main", adminA, {
      llm_id: "main",
      endpoint: llm.url,
      auth: { type: "api_key", key: "llm_key" }
    })).status
  ).toBe(200)
  expect(
    (await call("PUT", "/v1/settings", adminA, {
      default_llm: "main",
      egress_allowlist: ["api.example.com"],
      providers: { slack: { base_url: slackBase } }
    })).status
  ).toBe(200)
  expect(
    (await call("PUT", "/v1/connections/slack", adminA, { type: "api_key", secret: "slack_token", prefix: "Bearer " }))
      .status
  ).toBe(200)
  expect(
    (await call("PUT", "/v1/connections/acme", adminA, {
      type: "oauth2",
      client_id: "a-app",
      client_secret_secret: "app_secret",
      authorize_url: "https://idp.example.com/auth",
      token_url: "https://idp.example.com/token"
    })).status
  ).toBe(200)
  expect(
    (await call("PUT", "/v1/tools/a_tool", adminA, {
      tool_id: "a_tool",
      name: "A's tool",
      parameters: [{ name: "q", type: "string" }],
      endpoint: "https://api.example.com/q",
      method: "GET",
      auth: "none"
    })).status
  ).toBe(200)
})

afterAll(async () => {
  for (const r of restore) r()
  await edge.close()
  await llm.close()
  slack.closeAllConnections()
  await new Promise((r) => slack.close(r))
})

describe("tenant isolation of configuration and connections", () => {
  it("B cannot read, change or delete A's LLMs", async () => {
    expect((await call("GET", "/v1/llms/main", adminB)).status).toBe(404)
    expect((await call("GET", "/v1/llms", adminB)).body).toEqual([])
    expect((await call("DELETE", "/v1/llms/main", adminB)).status).toBe(404)
    // B's own "main" is B's: A's stays as it was
    expect(
      (await call("PUT", "/v1/llms/main", adminB, {
        llm_id: "main",
        endpoint: "https://llm.example.com/v1",
        auth: { type: "api_key", key: "llm_key" }
      })).status
    ).toBe(200)
    expect((await call("GET", "/v1/llms/main", adminA)).body.endpoint).toBe(llm.url)
    expect((await call("DELETE", "/v1/llms/main", adminB)).status).toBe(204)
    expect((await call("GET", "/v1/llms/main", adminA)).status).toBe(200)
  })

  it("B sees its own settings, never A's", async () => {
    const b = await call("GET", "/v1/settings", adminB)
    expect(b.body).toEqual({ fallback_llms: [], egress_allowlist: [], providers: {} })
    expect((await call("PUT", "/v1/settings", adminB, { egress_allowlist: ["b.example.com"] })).status).toBe(200)
    expect((await call("GET", "/v1/settings", adminA)).body.egress_allowlist).toEqual(["api.example.com"])
  })

  it("B cannot delete or use A's secrets", async () => {
    expect((await call("DELETE", "/v1/secrets/llm_key", adminB)).status).toBe(404)
    // B names A's secret in its own LLM: it is B's (absent) secret that is looked up
    expect(
      (await call("PUT", "/v1/llms/stolen", adminB, {
        llm_id: "stolen",
        endpoint: llm.url,
        auth: { type: "api_key", key: "llm_key" }
      })).status
    ).toBe(200)
    llm.script({ kind: "answer", content: "should not be reached" })
    const before = llm.received.length
    const task = await call("POST", "/v1/tasks", memberB, { input: "hello", llm_id: "stolen" })
    expect(task.body.status).toBe("failed")
    expect(task.body.error.code).toBe("llm_not_configured")
    expect(llm.received.length).toBe(before)
  })

  it("B cannot read, run or delete A's tools", async () => {
    expect((await call("GET", "/v1/tools/a_tool", adminB)).status).toBe(404)
    expect((await call("DELETE", "/v1/tools/a_tool", adminB)).status).toBe(404)
    const list = await call("GET", "/v1/tools", memberB)
    expect(list.body.map((t: { tool_id: string }) => t.tool_id)).not.toContain("a_tool")
    expect((await call("GET", "/v1/tools/a_tool", adminA)).status).toBe(200)
  })

  it("B cannot list, authorize, delete or use A's connections", async () => {
    expect((await call("GET", "/v1/connections", adminB)).body).toEqual([])
    expect((await call("POST", "/v1/connections/acme/authorize", adminB)).status).toBe(404)
    expect((await call("DELETE", "/v1/connections/slack", adminB)).status).toBe(404)
    expect((await call("DELETE", "/v1/connections/acme", adminB)).status).toBe(404)
    const a = await call("GET", "/v1/connections", adminA)
    expect(a.body.map((c: { provider: string }) => c.provider).sort()).toEqual(["acme", "slack"])
    // B's Slack call gets no credential of A's: it waits for B's own Slack connection
    const task = await call("POST", "/v1/tasks", memberB, {
      input: { steps: [{ id: "post", tool: "slack.post_message", input: { channel: "C1", text: "hi" } }] }
    })
    expect(task.body.status).toBe("waiting")
    expect(task.body.waiting_for).toEqual([
      expect.objectContaining({ kind: "connection", provider: "slack", reason: "missing" })
    ])
    expect(JSON.stringify(task.body)).not.toContain("xoxb")
    expect((await call("POST", `/v1/tasks/${task.body.task_id}/cancel`, memberB)).status).toBe(200)
  })

  it("A's own calls work, and no answer or log line anywhere holds a secret value", async () => {
    llm.script({ kind: "answer", content: "done" })
    const task = await call("POST", "/v1/tasks", adminA, { input: "say done" })
    expect(task.body.status).toBe("succeeded")
    expect(llm.received.at(-1)!.authorization).toBe(`Bearer ${secrets.llmKey}`)
    const posted = await call("POST", "/v1/tasks", adminA, {
      input: { steps: [{ id: "post", tool: "slack.post_message", input: { channel: "C1", text: "hi" } }] }
    })
    expect(posted.body.status, posted.text).toBe("succeeded")
    // a failing LLM call and a failing connection also leave nothing behind
    llm.script({ kind: "status", status: 401, body: { error: { message: `bad key ${secrets.llmKey.slice(0, 6)}` } } })
    await call("POST", "/v1/tasks", adminA, { input: "fail" })
    await call("POST", "/v1/connections/acme/authorize", adminA)

    // a vendor that echoes the credential it was sent in its error message, which ends up in the step error
    const echo = createServer((req, res) => {
      req.resume().on("end", () => {
        if (req.url === "/ok") {
          const token = String(req.headers.authorization).slice("Bearer ".length)
          res.writeHead(200, { "content-type": "application/json" })
          return res.end(JSON.stringify({ you_are: req.headers.authorization, [`key:${token}`]: true }))
        }
        res.writeHead(401, { "content-type": "application/json" })
        res.end(JSON.stringify({ status: "error", message: `Authentication failed for ${req.headers.authorization}` }))
      })
    })
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r))
    try {
      const echoBase = `http://127.0.0.1:${(echo.address() as { port: number }).port}`
      await call("PUT", "/v1/connections/hubspot", adminA, {
        type: "api_key",
        secret: "slack_token",
        prefix: "Bearer "
      })
      const settings = (await call("GET", "/v1/settings", adminA)).body
      await call("PUT", "/v1/settings", adminA, {
        ...settings,
        providers: { ...settings.providers, hubspot: { base_url: echoBase } }
      })
      const echoed = await call("POST", "/v1/tasks", adminA, {
        input: {
          steps: [{ id: "e", tool: "hubspot.create_contact", input: { properties: { email: "a@example.com" } } }]
        }
      })
      expect(echoed.body.status).toBe("failed")
      expect(echoed.body.steps[0].error.message).toContain("Authentication failed for <redacted>")

      // one that echoes it in a good (2xx) answer: the output, the events and the next step see it masked
      await call("PUT", "/v1/connections/echoer", adminA, { type: "api_key", secret: "slack_token", prefix: "Bearer " })
      await call("PUT", "/v1/settings", adminA, {
        ...settings,
        egress_allowlist: [...settings.egress_allowlist, new URL(echoBase).host]
      })
      expect(
        (await call("PUT", "/v1/tools/whoami", adminA, {
          tool_id: "whoami",
          name: "Who am I",
          parameters: [],
          endpoint: `${echoBase}/ok`,
          method: "POST",
          auth: "api_key",
          provider: "echoer"
        })).status
      ).toBe(200)
      const ok = await call("POST", "/v1/tasks", adminA, {
        input: {
          steps: [
            { id: "who", tool: "whoami" },
            { id: "say", tool: "text.template", input: { template: "{{x}}", variables: { x: { $ref: "who.output" } } } }
          ]
        }
      })
      expect(ok.body.status, ok.text).toBe("succeeded")
      expect(ok.body.steps[0].output).toEqual({ you_are: "<redacted>", [`key:<redacted>`]: true })
      expect(ok.text).not.toContain(secrets.slackToken)
      const events = await call("GET", `/v1/tasks/${ok.body.task_id}/events`, adminA)
      answers.push(events.text)
      expect(events.text).toContain("task.succeeded")
    } finally {
      echo.closeAllConnections()
      await new Promise((r) => echo.close(r))
    }

    const everything = [...answers, ...captured].join("\n")
    // the scan saw the process's log output (the LLM failure above is logged), not an empty buffer
    expect(captured.join("\n")).toMatch(/LLM|llm/)
    for (const value of Object.values(secrets)) expect(everything).not.toContain(value)
  })
})
