import { LlmConfig } from "@altan/domain/LlmConfig"
import { TaskRequest } from "@altan/domain/Task"
import { ToolDefinition } from "@altan/domain/ToolDefinition"
import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

// The two JSON documents exactly as the seed writes them.
const seedLlm = `{"llm_id": "gpt-4", "endpoint": "https://api.openai.com/v1/chat/completions",
  "auth": {"type": "api_key", "key": "openai_api_key"}, "parameters": {"max_tokens": 4096, "temperature": 0.7}}`
const seedTool = `{"tool_id": "slack_notify", "name": "Send Slack Notification",
  "description": "Sends a message to a Slack channel",
  "parameters": [{"name": "channel_id", "type": "string"}, {"name": "message", "type": "string"}],
  "endpoint": "https://slack.com/api/chat.postMessage", "method": "POST", "auth": "oauth2"}`

/** Decodes and returns the paths ParseResult blames, joined like `auth.type`. */
const failures = <A, I>(schema: Schema.Schema<A, I>, input: unknown) => {
  const result = Schema.decodeUnknownEither(schema, { errors: "all" })(input)
  if (Either.isRight(result)) throw new Error("expected a decode failure")
  return {
    paths: ParseResult.ArrayFormatter.formatErrorSync(result.left).map((i) => i.path.join(".")),
    message: result.left.message
  }
}

describe("seed documents", () => {
  it("decodes the seed's LLM config verbatim", () => {
    const config = Schema.decodeUnknownSync(LlmConfig)(JSON.parse(seedLlm))
    expect(config).toEqual({
      llm_id: "gpt-4",
      endpoint: "https://api.openai.com/v1/chat/completions",
      auth: { type: "api_key", key: "openai_api_key" },
      parameters: { max_tokens: 4096, temperature: 0.7 }
    })
  })

  it("decodes the seed's custom tool verbatim", () => {
    const tool = Schema.decodeUnknownSync(ToolDefinition)(JSON.parse(seedTool))
    expect(tool.tool_id).toBe("slack_notify")
    expect(tool.method).toBe("POST")
    expect(tool.auth).toBe("oauth2")
    expect(tool.parameters).toEqual([
      { name: "channel_id", type: "string", required: true },
      { name: "message", type: "string", required: true }
    ])
  })

  it("accepts a JSON Schema object as a tool's parameters", () => {
    const doc = { ...JSON.parse(seedTool), parameters: { type: "object", properties: { q: { type: "string" } } } }
    expect(Schema.decodeUnknownSync(ToolDefinition)(doc).parameters).toEqual(doc.parameters)
  })

  it.each([
    ["endpoint is not a URL", { endpoint: "slack.com/api" }, "endpoint"],
    ["endpoint is not http(s)", { endpoint: "file:///etc/passwd" }, "endpoint"],
    ["auth type is unknown", { auth: { type: "magic" } }, "auth.type"],
    ["llm_id is missing", { llm_id: undefined }, "llm_id"],
    ["parameters is a string", { parameters: "fast" }, "parameters"]
  ])("rejects an LLM config whose %s, naming the field", (_, change, field) => {
    const doc = { ...JSON.parse(seedLlm), ...change }
    const { message, paths } = failures(LlmConfig, doc)
    expect(paths.some((p) => p === field || p.startsWith(field))).toBe(true)
    expect(message).toContain(field.split(".").pop())
  })

  it.each([
    ["method is unsupported", { method: "FETCH" }, "method"],
    ["tool_id has spaces", { tool_id: "slack notify" }, "tool_id"],
    ["auth is unknown", { auth: "kerberos" }, "auth"],
    ["a parameter type is unknown", { parameters: [{ name: "channel_id", type: "uuid" }] }, "parameters"],
    ["name is missing", { name: undefined }, "name"]
  ])("rejects a custom tool whose %s, naming the field", (_, change, field) => {
    const doc = { ...JSON.parse(seedTool), ...change }
    const { message, paths } = failures(ToolDefinition, doc)
    expect(paths.some((p) => p.startsWith(field))).toBe(true)
    expect(message).toContain(field)
  })
})

describe("TaskRequest", () => {
  it("takes natural-language text or a structured plan with $refs, with defaults", () => {
    expect(Schema.decodeUnknownSync(TaskRequest)({ input: "hello" })).toEqual({
      input: "hello",
      mode: "sync",
      timeout_ms: 30000
    })
    const plan = Schema.decodeUnknownSync(TaskRequest)({
      input: {
        steps: [
          { id: "parse", tool: "email.parse", input: { raw: "From: a@b.c" } },
          {
            id: "note",
            tool: "text.template",
            input: { template: "{{s}}", variables: { s: { $ref: "parse.output.subject" } } }
          }
        ]
      },
      mode: "async"
    })
    expect(typeof plan.input === "object" && plan.input.steps[1]!.input).toEqual({
      template: "{{s}}",
      variables: { s: { $ref: "parse.output.subject" } }
    })
  })

  it("names the field of a bad step", () => {
    const { paths } = failures(TaskRequest, { input: { steps: [{ id: "a b", tool: "email.parse" }] } })
    expect(paths).toContain("input.steps.0.id")
  })

  it("rejects an empty plan and an unknown mode", () => {
    expect(failures(TaskRequest, { input: { steps: [] } }).paths.some((p) => p.startsWith("input"))).toBe(true)
    expect(failures(TaskRequest, { input: "x", mode: "later" }).paths).toContain("mode")
  })
})
