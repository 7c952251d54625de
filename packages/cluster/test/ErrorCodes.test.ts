import { ErrorCode, errorCodes } from "@altan/domain/Errors"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { makeProbes, startEdge } from "./fixtures.js"

// The edge's error answers, asked for one by one: each code is one of the OpenAPI `Error` schema's, with the status
// its line in `errorCodes` gives.

let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let member = ""

beforeAll(async () => {
  edge = await startEdge(makeProbes(), { maxBodyBytes: 1024 })
  admin = await edge.sign({ tenant_id: "codes", role: "admin" })
  member = await edge.sign({ tenant_id: "codes", role: "member" })
})

afterAll(() => edge.close())

const raw = (method: string, route: string, init: { token?: string; type?: string; body?: string } = {}) =>
  fetch(`${edge.base}${route}`, {
    method,
    headers: {
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
      ...(init.type ? { "content-type": init.type } : {})
    },
    ...(init.body !== undefined ? { body: init.body } : {})
  }).then(async (res) => ({ status: res.status, body: await res.json() as any }))

const plan = (steps: Array<unknown>) => JSON.stringify({ input: { steps } })

describe("error answers", () => {
  it("carry only enumerated codes, with their documented status", async () => {
    const ended = await edge.call("POST", "/v1/tasks", admin, {
      input: { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }] }
    })
    const json = { token: admin, type: "application/json" }
    const cases: Array<[string, Promise<{ status: number; body: any }>]> = [
      ["not_found", raw("GET", "/v1/nowhere", { token: admin })],
      ["not_found", raw("GET", "/v1/tasks/ses_nope.nope", { token: admin })],
      ["method_not_allowed", raw("DELETE", "/v1/tasks", { token: admin })],
      ["unsupported_media_type", raw("POST", "/v1/tasks", { token: admin, type: "text/plain", body: "hi" })],
      ["invalid_request", raw("POST", "/v1/tasks", { ...json, body: "{\"inputs\": 1}" })],
      ["invalid_request", raw("POST", "/v1/tasks", { ...json, body: "{not json" })],
      ["payload_too_large", raw("POST", "/v1/tasks", { ...json, body: JSON.stringify({ input: "x".repeat(4096) }) })],
      ["invalid_token", raw("GET", "/v1/tasks")],
      ["forbidden", raw("GET", "/v1/llms", { token: member })],
      ["unknown_tool", raw("POST", "/v1/tasks", { ...json, body: plan([{ id: "a", tool: "no.such", input: {} }]) })],
      [
        "invalid_plan",
        raw("POST", "/v1/tasks", {
          ...json,
          body: plan([{ id: "a", tool: "probe.echo", input: {} }, { id: "a", tool: "probe.echo", input: {} }])
        })
      ],
      [
        "invalid_tool_input",
        raw("POST", "/v1/tasks", { ...json, body: plan([{ id: "a", tool: "probe.echo", input: { other: 1 } }]) })
      ],
      ["llm_not_configured", raw("POST", "/v1/tasks", { ...json, body: JSON.stringify({ input: "say hi" }) })],
      ["task_finished", raw("POST", `/v1/tasks/${ended.body.task_id}/cancel`, { token: admin })],
      ["invalid_state", raw("GET", "/v1/oauth/callback?state=forged&code=c")]
    ]
    for (const [expected, answer] of cases) {
      const { body, status } = await answer
      const code = body.error.code
      expect(ErrorCode.literals, `${expected}: ${JSON.stringify(body)}`).toContain(code)
      expect(errorCodes[code as ErrorCode].slice(0, 3), code).toBe(String(status))
      // what each case is for, so a changed answer is noticed here too
      expect(code).toBe(expected)
    }
  })
})
