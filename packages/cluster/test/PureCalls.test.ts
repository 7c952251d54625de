import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { capturingTracer, makeProbes, startEdge } from "./fixtures.js"

// The pure built-in tools (text.template, json.extract, datetime.parse, email.parse) run in the session's process:
// no Connection, no tool worker, still audited and in the call metrics, and free of the tool_calls budget. Other
// tools still go through the tenant's connection.

const { spans, tracer } = capturingTracer()
/** How many spans named `name` the runtime opened for `taskId`. */
const spansOf = (name: string, taskId: string) =>
  spans.filter((s) => s.name === name && s.attributes.get("altan.task_id") === taskId).length

/** The tenant's `tool_calls` use today, as `GET /v1/usage` shows it. */
const toolCallsUsed = async () =>
  (await edge.call("GET", "/v1/usage", admin)).body.usage.find((u: any) =>
    u.budget === "tool_calls" && u.period === "day"
  ).used

let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""

beforeAll(async () => {
  fake = await startFakeOpenAi()
  edge = await startEdge(makeProbes(), { tracer })
  admin = await edge.sign({ tenant_id: "pure", role: "admin", sub: "root" })
  expect((await edge.call("PUT", "/v1/secrets/llm_key", admin, { value: "sk-pure" })).status).toBe(204)
  const llm = await edge.call("PUT", "/v1/llms/main", admin, {
    llm_id: "main",
    endpoint: fake.url,
    auth: { type: "api_key", key: "llm_key" }
  })
  expect(llm.status, llm.text).toBe(200)
  const settings = await edge.call("PUT", "/v1/settings", admin, {
    default_llm: "main",
    budgets: { tool_calls: { limit: 1, period: "day" } }
  })
  expect(settings.status, settings.text).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await fake.close()
})

describe("pure built-in tools", () => {
  it("run in the session: no connection or tool worker, audited, and not counted against tool_calls", async () => {
    const res = await edge.call("POST", "/v1/tasks", admin, {
      input: {
        steps: [
          { id: "mail", tool: "email.parse", input: { raw: "From: ada@example.com\r\nSubject: Invoice 7\r\n\r\nhi" } },
          { id: "pick", tool: "json.extract", input: { json: { $ref: "mail.output" }, path: "subject" } },
          {
            id: "say",
            tool: "text.template",
            input: { template: "re: {{s}}", variables: { s: { $ref: "pick.output.value" } } }
          }
        ]
      }
    })
    expect(res.status, res.text).toBe(200)
    expect(res.body.status, res.text).toBe("succeeded")
    expect(res.body.output).toEqual({ text: "re: Invoice 7" })
    const taskId: string = res.body.task_id
    // the task counts the calls it made; each ran once, here
    expect(res.body.usage.tool_calls).toBe(3)
    expect(res.body.steps.map((s: { attempts: number }) => s.attempts)).toEqual([1, 1, 1])
    for (const step of res.body.steps) {
      expect(step).toMatchObject({
        status: "succeeded",
        started_at: expect.any(String),
        finished_at: expect.any(String)
      })
      expect(step.duration_ms).toBeGreaterThanOrEqual(0)
    }
    // each step is written once, when its call ended, with both its events: the log tells the same story as before
    const events = (await edge.call("GET", `/v1/tasks/${taskId}/events`, admin)).text.split("\n\n")
      .filter((block) => block.includes("data:"))
      .map((block) => JSON.parse(block.split("\n").find((l) => l.startsWith("data: "))!.slice(6)))
    expect(events.map((e: { type: string; step_id?: string }) => [e.type, e.step_id])).toEqual([
      ["task.queued", undefined],
      ["task.started", undefined],
      ["tool.started", "mail"],
      ["tool.completed", "mail"],
      ["tool.started", "pick"],
      ["tool.completed", "pick"],
      ["tool.started", "say"],
      ["tool.completed", "say"],
      ["task.succeeded", undefined]
    ])
    expect(events[3].data).toMatchObject({ tool: "email.parse", duration_ms: expect.any(Number) })
    expect(spansOf("PureCalls.run", taskId)).toBe(3)
    expect(spansOf("Connection.invoke", taskId)).toBe(0)
    expect(spansOf("ToolWorker.execute", taskId)).toBe(0)

    const records = edge.audit().filter((r) => r.action === "tool.invoke" && r.details?.["task_id"] === taskId)
    expect(records.map((r) => [r.target, r.outcome, r.details?.["provider"], r.details?.["step_id"]])).toEqual([
      ["tool:email.parse", "ok", "utility", "mail"],
      ["tool:json.extract", "ok", "utility", "pick"],
      ["tool:text.template", "ok", "utility", "say"]
    ])

    // the tool_calls budget (limit 1) is untouched: a call through a connection still gets it, and counts
    expect(await toolCallsUsed()).toBe(0)
    const echo = await edge.call("POST", "/v1/tasks", admin, {
      input: { steps: [{ id: "e", tool: "probe.echo", input: { value: "through the connection" } }] }
    })
    expect(echo.body.status, echo.text).toBe("succeeded")
    expect(spansOf("Connection.invoke", echo.body.task_id)).toBe(1)
    expect(await toolCallsUsed()).toBe(1)
    // and with the budget spent, pure calls still run
    const again = await edge.call("POST", "/v1/tasks", admin, {
      input: { steps: [{ id: "t", tool: "text.template", input: { template: "still {{x}}", variables: { x: 1 } } }] }
    })
    expect(again.body, again.text).toMatchObject({ status: "succeeded", output: { text: "still 1" } })
  })

  it("fail a step as the tool service would: the model's bad input names the field, a refusal says why", async () => {
    fake.script(
      {
        kind: "tools",
        calls: [
          { name: "text-template", arguments: `{"template":1,"variables":{}}` },
          { name: "json-extract", arguments: `{"json":{"a":1},"path":"a..b"}` }
        ]
      },
      { kind: "answer", content: "both failed" }
    )
    const res = await edge.call("POST", "/v1/tasks", admin, {
      input: "render and extract",
      tools: ["text.template", "json.extract"]
    })
    expect(res.status, res.text).toBe(200)
    const failed = res.body.steps.filter((s: { status: string }) => s.status === "failed")
    expect(failed.map((s: { tool: string }) => s.tool).sort()).toEqual(["json.extract", "text.template"])
    const template = failed.find((s: { tool: string }) => s.tool === "text.template")
    expect(template.error).toMatchObject({ code: "invalid_tool_input", details: { field: "template" } })
    expect(template.error.message).toContain("template: must be a string (got 1)")
    const extract = failed.find((s: { tool: string }) => s.tool === "json.extract")
    expect(extract.error.code).toBe("tool_failed")
    expect(extract.error.message).toMatch(/path/)
    // what the model was told of each failure is the step's error
    const toolMessages = fake.received[1]!.body.messages.filter((m: { role: string }) => m.role === "tool")
    expect(toolMessages.map((m: { content: string }) => m.content).join("\n")).toContain("must be a string (got 1)")
    expect(spansOf("Connection.invoke", res.body.task_id)).toBe(0)
    // a failed pure step is logged started, then failed, with its error
    const events = (await edge.call("GET", `/v1/tasks/${res.body.task_id}/events`, admin)).text
    const failedEvents = events.split("\n\n").filter((block) => block.includes("event: tool.failed"))
    expect(failedEvents).toHaveLength(2)
    expect(events.match(/event: tool\.started/g)).toHaveLength(2)
    expect(failedEvents.join("\n")).toContain("invalid_tool_input")
  })
})
