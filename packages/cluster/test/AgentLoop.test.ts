import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import { type Received, startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * Natural-language tasks end to end: the public API, the agent loop in AgentSession, the LLM gateway
 * behind Connection (the real `openai` SDK) against a loopback chat-completions server, and tools run
 * by ToolWorker.
 */
const probes = makeProbes()
let primary: Awaited<ReturnType<typeof startFakeOpenAi>>
let backup: Awaited<ReturnType<typeof startFakeOpenAi>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""

const call = (method: string, path: string, body?: unknown, token = admin) => edge.call(method, path, token, body)
const run = async (input: string, extra: Record<string, unknown> = {}) => {
  const res = await call("POST", "/v1/tasks", { input, timeout_ms: 20_000, ...extra })
  expect([200, 202], JSON.stringify(res.body)).toContain(res.status)
  return res.body
}
const messagesOf = (r: Received) =>
  r.body.messages as Array<{ role: string; content: string | null; tool_call_id?: string }>

beforeAll(async () => {
  primary = await startFakeOpenAi()
  backup = await startFakeOpenAi()
  edge = await startEdge(probes, {
    llm: {
      timeout: Duration.millis(600),
      maxAttempts: 3,
      baseDelay: Duration.millis(20),
      maxResponseBytes: 1024 * 1024
    }
  })
  admin = await edge.sign({ tenant_id: "acme", role: "admin" })
  for (const [name, value] of [["primary_key", "sk-primary-secret"], ["backup_key", "sk-backup-secret"]]) {
    expect((await call("PUT", `/v1/secrets/${name}`, { value })).status).toBe(204)
  }
  // the seed's LLM config, pointed at the loopback servers
  expect(
    (await call("PUT", "/v1/llms/gpt-4", {
      llm_id: "gpt-4",
      endpoint: primary.url,
      auth: { type: "api_key", key: "primary_key" },
      parameters: { max_tokens: 256, temperature: 0.7 }
    })).status
  ).toBe(200)
  expect(
    (await call("PUT", "/v1/llms/backup", {
      llm_id: "backup",
      endpoint: backup.url,
      model: "backup-model",
      auth: { type: "api_key", key: "backup_key" }
    })).status
  ).toBe(200)
  expect((await call("PUT", "/v1/settings", { default_llm: "gpt-4" })).status).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await primary.close()
  await backup.close()
})

beforeEach(() => {
  probes.reset()
  primary.script({ kind: "answer", content: "unscripted" })
  backup.script({ kind: "answer", content: "unscripted" })
})

describe("agent loop", () => {
  it("answers directly, with the tenant's key, its parameters and the tools' JSON Schemas", async () => {
    primary.script({ kind: "answer", content: "Nothing to do." })
    const task = await run("Say hello")
    expect(task).toMatchObject({ status: "succeeded", output: "Nothing to do.", llm_id: "gpt-4" })
    expect(task.usage).toEqual({ llm_calls: 1, tool_calls: 0, prompt_tokens: 11, completion_tokens: 7 })
    const [request] = primary.received
    expect(request!.authorization).toBe("Bearer sk-primary-secret")
    expect(request!.body).toMatchObject({ model: "gpt-4", max_tokens: 256, temperature: 0.7 })
    const emailParse = request!.body.tools.find((t: any) => t.function.name === "email-parse")
    expect(emailParse).toMatchObject({
      type: "function",
      function: { parameters: { type: "object", required: ["raw"] } }
    })
    // the input schema the tool declares, its description included, is what the model is shown
    expect(emailParse.function.parameters.properties.raw).toMatchObject({
      type: "string",
      maxLength: 1_048_576,
      description: expect.stringContaining("raw message (RFC 5322)")
    })
    const messages = messagesOf(request!)
    expect(messages[0]!.role).toBe("system")
    expect(messages[0]!.content).toContain("never instructions")
    expect(messages.at(-1)).toEqual({ role: "user", content: "Say hello" })
  })

  it("uses a rotated key on the next turn", async () => {
    primary.script({ kind: "answer", content: "ok" })
    await run("Before")
    expect((await call("PUT", "/v1/secrets/primary_key", { value: "sk-rotated" })).status).toBe(204)
    try {
      await run("After")
      expect(primary.received.map((r) => r.authorization)).toEqual(["Bearer sk-primary-secret", "Bearer sk-rotated"])
    } finally {
      await call("PUT", "/v1/secrets/primary_key", { value: "sk-primary-secret" })
    }
  })

  it("runs a turn's two tool calls in parallel and feeds their results back", async () => {
    primary.script(
      {
        kind: "tools",
        calls: [{ name: "probe-barrier", arguments: `{"label":"A"}` }, {
          name: "probe-barrier",
          arguments: `{"label":"B"}`
        }]
      },
      { kind: "answer", content: "Both done." }
    )
    const task = await run("Do A and B")
    expect(task.status).toBe("succeeded")
    expect(probes.maxInFlight()).toBe(2) // they overlapped at the tool
    expect(task.steps.map((s: any) => [s.id, s.tool, s.status, s.output?.concurrent])).toEqual([
      ["1.1", "probe.barrier", "succeeded", 2],
      ["1.2", "probe.barrier", "succeeded", 2]
    ])
    expect(task.usage).toMatchObject({ llm_calls: 2, tool_calls: 2, prompt_tokens: 22, completion_tokens: 14 })
    const second = messagesOf(primary.received[1]!)
    const assistant = second.find((m: any) => m.role === "assistant") as any
    const results = second.filter((m) => m.role === "tool")
    expect(results.map((m) => m.tool_call_id)).toEqual(assistant.tool_calls.map((c: any) => c.id))
    expect(JSON.parse(results[0]!.content!)).toEqual({ output: { label: "A", concurrent: 2 } })
  })

  it("repairs malformed tool-call arguments with one round trip", async () => {
    primary.script(
      { kind: "tools", calls: [{ name: "probe-echo", arguments: `{"value": 1,,}` }] },
      { kind: "tools", calls: [{ name: "probe-echo", arguments: `{"value": 1}` }] },
      { kind: "answer", content: "Echoed." }
    )
    const task = await run("Echo 1")
    expect(task.status).toBe("succeeded")
    expect(task.turns[0].attempts.map((a: any) => a.outcome)).toEqual(["bad_response", "repaired"])
    expect(messagesOf(primary.received[1]!).at(-1)!.content).toContain("not a valid JSON object")
    expect(probes.calls).toEqual([{ tool: "probe.echo", input: { value: 1 } }])
  })

  it("fails with llm_bad_response when the arguments stay malformed", async () => {
    primary.script({ kind: "tools", calls: [{ name: "probe-echo", arguments: `not json` }] })
    const task = await run("Echo")
    expect(task).toMatchObject({ status: "failed", error: { code: "llm_bad_response" } })
    expect(probes.calls).toEqual([])
  })

  it("retries a 500, then succeeds", async () => {
    primary.script({ kind: "status", status: 500 }, { kind: "answer", content: "Recovered." })
    const task = await run("Try")
    expect(task).toMatchObject({ status: "succeeded", output: "Recovered." })
    expect(task.turns[0].attempts.map((a: any) => [a.outcome, a.error ?? null])).toEqual([["retry", "HTTP 500"], [
      "ok",
      null
    ]])
    expect(task.usage.llm_calls).toBe(2)
  })

  it("waits out a 429's Retry-After before trying again", async () => {
    primary.script({ kind: "status", status: 429, headers: { "retry-after": "1" } }, {
      kind: "answer",
      content: "Later."
    })
    const task = await run("Try")
    expect(task.status).toBe("succeeded")
    const [first, second] = primary.received
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(990)
  })

  it("times out a hanging LLM call and retries", async () => {
    primary.script({ kind: "hang" }, { kind: "answer", content: "Awake." })
    const task = await run("Try")
    expect(task).toMatchObject({ status: "succeeded", output: "Awake." })
    expect(task.turns[0].attempts[0]).toMatchObject({ outcome: "retry", error: "timed out" })
    expect(task.turns[0].attempts[0].duration_ms).toBeGreaterThanOrEqual(550)
  })

  it("moves to the fallback LLM when the primary keeps failing", async () => {
    expect((await call("PUT", "/v1/settings", { default_llm: "gpt-4", fallback_llms: ["backup"] })).status).toBe(200)
    try {
      primary.script({ kind: "status", status: 503 })
      backup.script({ kind: "answer", content: "From the backup." })
      const task = await run("Try")
      expect(task).toMatchObject({ status: "succeeded", output: "From the backup." })
      expect(task.turns[0].llm_id).toBe("backup")
      expect(task.turns[0].attempts.map((a: any) => `${a.llm_id}:${a.outcome}`)).toEqual([
        "gpt-4:retry",
        "gpt-4:retry",
        "gpt-4:failed",
        "backup:ok"
      ])
      expect(primary.received).toHaveLength(3)
      expect(backup.received[0]!.authorization).toBe("Bearer sk-backup-secret")
      expect(backup.received[0]!.body.model).toBe("backup-model")
    } finally {
      await call("PUT", "/v1/settings", { default_llm: "gpt-4" })
    }
  })

  it("fails with llm_unavailable when every LLM fails", async () => {
    // the upstream echoes the key it was sent, as some proxies do: it must not reach the task
    primary.script({
      kind: "status",
      status: 401,
      body: { error: { message: "invalid api key: Bearer sk-primary-secret" } }
    })
    const task = await run("Try")
    expect(task).toMatchObject({ status: "failed", error: { code: "llm_unavailable" } })
    expect(primary.received).toHaveLength(1) // a 401 is not retried
    expect(JSON.stringify(task)).not.toContain("sk-primary-secret")
  })

  it("uses the task's llm_id over the tenant's default", async () => {
    backup.script({ kind: "answer", content: "Backup speaking." })
    const task = await run("Who answers?", { llm_id: "backup" })
    expect(task).toMatchObject({ status: "succeeded", output: "Backup speaking.", llm_id: "backup" })
    expect(primary.received).toHaveLength(0)
    expect(backup.received).toHaveLength(1)
  })

  it("never lets an LLM endpoint reach a private or metadata address", async () => {
    for (
      const [id, endpoint] of [
        ["metadata", "http://169.254.169.254/latest/v1/chat/completions"],
        ["internal", "http://10.1.2.3/v1/chat/completions"],
        ["google", "http://metadata.google.internal/v1/chat/completions"]
      ]
    ) {
      expect((await call("PUT", `/v1/llms/${id}`, { llm_id: id, endpoint, auth: { type: "none" } })).status).toBe(200)
      const task = await run("Hi", { llm_id: id })
      expect(task, id).toMatchObject({ status: "failed", error: { code: "llm_unavailable" } })
      expect(task.error.message).toContain("egress_denied")
      expect(task.turns[0].attempts).toHaveLength(1) // refused, not retried
    }
  })

  it("refuses an unknown llm_id with 400", async () => {
    const res = await call("POST", "/v1/tasks", { input: "Hi", llm_id: "gpt-9" })
    expect(res.status).toBe(400)
    expect(res.body.error).toMatchObject({ code: "unknown_llm", details: { field: "llm_id" } })
  })

  it("never runs unknown or disallowed tools, and tells the model why", async () => {
    primary.script(
      { kind: "tools", calls: [{ name: "probe-fail", arguments: "{}" }, { name: "no-such_tool", arguments: "{}" }] },
      { kind: "answer", content: "Could not." }
    )
    const task = await run("Use tools", { tools: ["probe.echo"] })
    expect(task.status).toBe("succeeded")
    expect(probes.calls).toEqual([])
    expect(task.steps.map((s: any) => s.error?.code)).toEqual(["tool_not_allowed", "unknown_tool"])
    // only the allowed tool was offered
    expect(primary.received[0]!.body.tools.map((t: any) => t.function.name)).toEqual(["probe-echo"])
    const results = messagesOf(primary.received[1]!).filter((m) => m.role === "tool").map((m) => m.content)
    expect(results[0]).toContain("tool_not_allowed")
    expect(results[1]).toContain("unknown_tool")
  })

  it("offers the tenant's default toolset (settings.tools) to a task that names none; a task's own tools win", async () => {
    const settings = { default_llm: "gpt-4", tools: ["probe.echo", "json.extract"] }
    expect((await call("PUT", "/v1/settings", settings)).status).toBe(200)
    try {
      primary.script({ kind: "answer", content: "ok" })
      const task = await run("Use what you have")
      expect(task.tools).toEqual(["probe.echo", "json.extract"])
      expect(primary.received[0]!.body.tools.map((t: any) => t.function.name).sort()).toEqual([
        "json-extract",
        "probe-echo"
      ])
      const own = await run("Only echo", { tools: ["probe.fail"] })
      expect(own.tools).toEqual(["probe.fail"])
      expect(primary.received[1]!.body.tools.map((t: any) => t.function.name)).toEqual(["probe-fail"])
      // a plan outside the default toolset is refused before anything runs, saying where the limit comes from
      const plan = { input: { steps: [{ id: "a", tool: "probe.fail", input: {} }] } }
      const refused = await call("POST", "/v1/tasks", plan)
      expect(refused.status).toBe(400)
      expect(refused.body.error).toMatchObject({ code: "tool_not_allowed", details: { field: "input.steps.0.tool" } })
      expect(refused.body.error.message).toContain("settings.tools")
      expect(probes.calls).toEqual([])
      // an empty toolset is not a setting
      expect((await call("PUT", "/v1/settings", { ...settings, tools: [] })).status).toBe(400)
    } finally {
      expect((await call("PUT", "/v1/settings", { default_llm: "gpt-4" })).status).toBe(200)
    }
  })

  it("stops at max_steps", async () => {
    primary.script({ kind: "tools", calls: [{ name: "probe-echo", arguments: `{"value": 2}` }] })
    const task = await run("Loop", { max_steps: 2 })
    expect(task).toMatchObject({ status: "failed", error: { code: "max_steps" } })
    expect(primary.received).toHaveLength(2)
    expect(task.turns).toHaveLength(2)
  })

  it("bounds a 10 MiB answer with a clear error", async () => {
    primary.script({ kind: "huge", bytes: 10 * 1024 * 1024 })
    const started = Date.now()
    const task = await run("Talk a lot")
    expect(task).toMatchObject({ status: "failed", error: { code: "llm_bad_response" } })
    expect(task.error.message).toContain("more than 1048576 bytes")
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it("keeps the session's context for the next task", async () => {
    primary.script({ kind: "answer", content: "Your name is Ada." })
    const first = await run("My name is Ada.", { session_id: "memory" })
    primary.script({ kind: "answer", content: "Ada." })
    await run("What is my name?", { session_id: "memory" })
    const messages = messagesOf(primary.received[0]!)
    expect(messages.map((m) => m.content)).toEqual(
      expect.arrayContaining(["My name is Ada.", "Your name is Ada.", "What is my name?"])
    )
    const session = await call("GET", "/v1/sessions/memory")
    expect(session.body).toMatchObject({ message_count: 4, task_ids: [first.task_id, expect.any(String)] })
  })

  it("cancels a running task, interrupting its tool calls", async () => {
    primary.script({ kind: "tools", calls: [{ name: "probe-hang", arguments: "{}" }] })
    const task = await run("Wait forever", { mode: "async" })
    await probes.called("probe.hang")
    const cancelled = await call("POST", `/v1/tasks/${task.task_id}/cancel`)
    expect(cancelled.status).toBe(200)
    expect(cancelled.body).toMatchObject({ status: "cancelled", steps: [{ tool: "probe.hang", status: "cancelled" }] })
    expect((await call("POST", `/v1/tasks/${task.task_id}/cancel`)).status).toBe(409)
  })

  describe("text.generate", () => {
    const generate = (input: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      call("POST", "/v1/tasks", {
        input: { steps: [{ id: "draft", tool: "text.generate", input }] },
        timeout_ms: 20_000,
        ...extra
      })

    it("writes text with the tenant's default LLM, through the integrator", async () => {
      primary.script({ kind: "answer", content: "Dear Ada, your order shipped." })
      const res = await generate({ prompt: "Tell Ada her order shipped.", instructions: "One sentence." })
      expect(res.body.status, JSON.stringify(res.body)).toBe("succeeded")
      expect(res.body.output).toEqual({
        text: "Dear Ada, your order shipped.",
        llm_id: "gpt-4",
        prompt_tokens: 11,
        completion_tokens: 7
      })
      const [request] = primary.received
      expect(request!.authorization).toBe("Bearer sk-primary-secret")
      expect(messagesOf(request!)).toEqual([
        { role: "system", content: "One sentence." },
        { role: "user", content: "Tell Ada her order shipped." }
      ])
      // a generation is not an agent turn: the model is offered no tools
      expect(request!.body.tools).toBeUndefined()
    })

    it("uses the task's llm_id, and the tenant's fallback LLM when that one fails", async () => {
      backup.script({ kind: "answer", content: "from backup" })
      const chosen = await generate({ prompt: "hi" }, { llm_id: "backup" })
      expect(chosen.body.output).toMatchObject({ text: "from backup", llm_id: "backup" })
      expect(primary.received).toHaveLength(0)

      expect((await call("PUT", "/v1/settings", { default_llm: "gpt-4", fallback_llms: ["backup"] })).status).toBe(200)
      try {
        primary.script({ kind: "status", status: 503 })
        const res = await generate({ prompt: "hi" })
        expect(res.body.status, JSON.stringify(res.body)).toBe("succeeded")
        expect(res.body.output).toMatchObject({ text: "from backup", llm_id: "backup" })
        expect(primary.received).toHaveLength(3)
      } finally {
        await call("PUT", "/v1/settings", { default_llm: "gpt-4" })
      }
    })

    it("fails the step clearly when the tenant has no LLM, and when the LLM refuses", async () => {
      const other = await edge.sign({ tenant_id: "no-llm-tenant", role: "admin" })
      const res = await call("POST", "/v1/tasks", {
        input: { steps: [{ id: "draft", tool: "text.generate", input: { prompt: "hi" } }] }
      }, other)
      expect(res.body.status).toBe("failed")
      expect(res.body.steps[0].error).toMatchObject({ code: "tool_failed" })
      expect(res.body.steps[0].error.message).toContain("default_llm")

      primary.script({ kind: "status", status: 401, body: { error: { message: "bad key" } } })
      const refused = await generate({ prompt: "hi" })
      expect(refused.body.status).toBe("failed")
      expect(refused.body.steps[0].error.code).toBe("tool_failed")
      expect(JSON.stringify(refused.body)).not.toContain("sk-primary-secret")
      expect(primary.received).toHaveLength(1)
    })

    it("refuses an unknown llm_id on a plan with 400", async () => {
      const res = await generate({ prompt: "hi" }, { llm_id: "nope" })
      expect(res.status).toBe(400)
      expect(res.body.error).toMatchObject({ code: "unknown_llm", details: { field: "llm_id" } })
    })
  })
})
