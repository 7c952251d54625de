import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import { randomUUID } from "node:crypto"
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

// A tenant's remote MCP servers over the public API: a server made with the MCP SDK on loopback, its tools imported
// as mcp.<server_id>.<name>, called from a plan and by the model, `isError` answers mapped to failed steps, an API key
// connection's header on every request, a refresh that picks up a changed tool list, and tenants kept apart.

/** What the remote server received: each JSON-RPC method, and the API key it came with. */
const seen: Array<{ method: string; apiKey?: string | undefined; args?: unknown }> = []
let tools: Array<Record<string, unknown>> = []
let remote: HttpServer
let remoteHost = ""
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let member = ""
let otherAdmin = ""

const calculator = [
  {
    name: "add",
    description: "Adds two numbers",
    inputSchema: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"]
    },
    outputSchema: { type: "object", properties: { sum: { type: "number" } }, required: ["sum"] },
    annotations: { readOnlyHint: true }
  },
  {
    name: "Divide-By",
    description: "Divides a by b",
    inputSchema: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } } }
  }
]

/** A stateless MCP server (a new server and transport per request), as small remote servers are. */
/** The API key of every request the servers received, accepted or not. */
const keys: Array<string | undefined> = []
const serve = async (req: IncomingMessage, res: ServerResponse) => {
  const apiKey = req.headers["x-api-key"] as string | undefined
  keys.push(apiKey)
  if (apiKey !== "mk-77") {
    res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: "bad key" }))
    return
  }
  const server = new Server({ name: "calc", version: "1.0.0" }, { capabilities: { tools: {} } })
  server.setRequestHandler(ListToolsRequestSchema, () => {
    seen.push({ method: "tools/list", apiKey })
    return { tools } as any
  })
  server.setRequestHandler(CallToolRequestSchema, (request) => {
    const args = request.params.arguments as { a: number; b: number }
    seen.push({ method: "tools/call", apiKey, args: { name: request.params.name, ...args } })
    if (request.params.name === "add") {
      return { content: [{ type: "text", text: String(args.a + args.b) }], structuredContent: { sum: args.a + args.b } }
    }
    if (args.b === 0) return { content: [{ type: "text", text: "cannot divide by zero" }], isError: true }
    return { content: [{ type: "text", text: String(args.a / args.b) }] }
  })
  const transport = new StreamableHTTPServerTransport({ enableJsonResponse: true })
  res.on("close", () => void transport.close())
  await server.connect(transport)
  await transport.handleRequest(req, res)
}

/** A stateful MCP server: one session per `initialize`, kept until it "restarts" (`stateful.clear()`). */
const stateful = new Map<string, StreamableHTTPServerTransport>()
let initializes = 0
const serveStateful = async (req: IncomingMessage, res: ServerResponse) => {
  const sessionId = req.headers["mcp-session-id"] as string | undefined
  if (sessionId !== undefined) {
    const transport = stateful.get(sessionId)
    if (transport === undefined) {
      res.writeHead(404, { "content-type": "application/json" }).end(
        JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null })
      )
      return
    }
    return transport.handleRequest(req, res)
  }
  initializes++
  const server = new Server({ name: "sessions", version: "1.0.0" }, { capabilities: { tools: {} } })
  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: [calculator[0]] }) as any)
  server.setRequestHandler(CallToolRequestSchema, (request) => {
    const args = request.params.arguments as { a: number; b: number }
    return { content: [{ type: "text", text: String(args.a + args.b) }], structuredContent: { sum: args.a + args.b } }
  })
  const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    enableJsonResponse: true,
    onsessioninitialized: (id) => void stateful.set(id, transport)
  })
  await server.connect(transport)
  await transport.handleRequest(req, res)
}

/** A server whose `grow` tool adds a tool and says so on the call's own answer stream (SSE). */
let growing: Array<Record<string, unknown>> = []
const serveGrowing = async (req: IncomingMessage, res: ServerResponse) => {
  const server = new Server({ name: "growing", version: "1.0.0" }, { capabilities: { tools: { listChanged: true } } })
  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: growing }) as any)
  server.setRequestHandler(CallToolRequestSchema, async (_request, extra) => {
    growing = [...growing, { ...calculator[0]!, name: `added_${growing.length}` }]
    await extra.sendNotification({ method: "notifications/tools/list_changed" })
    return { content: [{ type: "text", text: "grown" }] }
  })
  const transport = new StreamableHTTPServerTransport({})
  res.on("close", () => void transport.close())
  await server.connect(transport)
  await transport.handleRequest(req, res)
}

beforeAll(async () => {
  tools = [...calculator]
  remote = createServer((req, res) =>
    void (req.url?.startsWith("/stateful")
      ? serveStateful(req, res)
      : req.url?.startsWith("/growing")
      ? serveGrowing(req, res)
      : serve(req, res))
  )
  await new Promise<void>((r) => remote.listen(0, "127.0.0.1", r))
  remoteHost = `127.0.0.1:${(remote.address() as { port: number }).port}`
  fake = await startFakeOpenAi()
  edge = await startEdge(makeProbes())
  admin = await edge.sign({ tenant_id: "mcpc", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "mcpc", role: "member", sub: "ana" })
  otherAdmin = await edge.sign({ tenant_id: "mcpc-other", role: "admin", sub: "eve" })
  expect((await edge.call("PUT", "/v1/secrets/calc_key", admin, { value: "mk-77" })).status).toBe(204)
  expect(
    (await edge.call("PUT", "/v1/connections/calc", admin, {
      type: "api_key",
      secret: "calc_key",
      header: "X-Api-Key"
    }))
      .status
  ).toBe(200)
  expect((await edge.call("PUT", "/v1/secrets/llm_key", admin, { value: "sk-mcp" })).status).toBe(204)
  expect(
    (await edge.call("PUT", "/v1/llms/main", admin, {
      llm_id: "main",
      endpoint: fake.url,
      auth: { type: "api_key", key: "llm_key" }
    })).status
  ).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await fake.close()
  remote.closeAllConnections()
  await new Promise((r) => remote.close(r))
})

const putServer = (token = admin) =>
  edge.call("PUT", "/v1/mcp/servers/calc", token, {
    url: `http://${remoteHost}/mcp`,
    connection: "calc",
    description: "A calculator"
  })

describe("a tenant's remote MCP servers", () => {
  it("imports a server's tools only where the tenant may reach it, under their tool ids, with their hints", async () => {
    // a host neither the operator (loopback 127.0.0.1, for the fakes) nor the tenant allows: refused, unasked
    expect((await edge.call("PUT", "/v1/settings", admin, { default_llm: "main" })).status).toBe(200)
    const denied = await edge.call("PUT", "/v1/mcp/servers/calc", admin, { url: "http://127.0.0.2:8080/mcp" })
    expect(denied.status, denied.text).toBe(400)
    expect(denied.body.error).toMatchObject({ code: "egress_denied", details: { field: "url" } })
    expect(denied.body.error.message).toContain("egress_allowlist")
    expect((await edge.call("GET", "/v1/mcp/servers", admin)).body).toEqual([])

    const settings = { default_llm: "main", egress_allowlist: [remoteHost] }
    expect((await edge.call("PUT", "/v1/settings", admin, settings)).status).toBe(200)
    const put = await putServer()
    expect(put.status, put.text).toBe(200)
    expect(put.body).toMatchObject({
      server_id: "calc",
      connection: "calc",
      protocol_version: expect.any(String),
      imported: [
        { tool_id: "mcp.calc.add", name: "add", read_only: true, destructive: false, idempotent: true },
        { tool_id: "mcp.calc.divide_by", name: "Divide-By", read_only: false, destructive: true, idempotent: false }
      ]
    })
    // every request carried the connection's key, never shown back
    expect(keys.length).toBeGreaterThan(0)
    expect(keys.every((k) => k === "mk-77")).toBe(true)
    expect(put.text).not.toContain("mk-77")
    const listed = await edge.call("GET", "/v1/tools", member)
    const add = listed.body.find((t: any) => t.tool_id === "mcp.calc.add")
    expect(add).toMatchObject({ provider: "calc", side_effect: false, idempotent: true, builtin: false })
    expect((await edge.call("GET", "/v1/mcp/servers", admin)).body.map((s: any) => s.server_id)).toEqual(["calc"])
    // members do not manage servers
    expect((await edge.call("GET", "/v1/mcp/servers", member)).status).toBe(403)
  })

  it("calls them from a plan and from the model; an isError answer fails the step with the server's text", async () => {
    seen.length = 0
    const plan = await edge.call("POST", "/v1/tasks", member, {
      input: {
        steps: [
          { id: "sum", tool: "mcp.calc.add", input: { a: 2, b: 3 } },
          { id: "half", tool: "mcp.calc.divide_by", input: { a: { $ref: "sum.output.sum" }, b: 2 } }
        ]
      }
    })
    expect(plan.body.status, plan.text).toBe("succeeded")
    expect(plan.body.steps[0].output).toEqual({ sum: 5 })
    expect(plan.body.output).toBe("2.5")
    expect(seen.filter((s) => s.method === "tools/call").map((s) => s.args)).toEqual([
      { name: "add", a: 2, b: 3 },
      { name: "Divide-By", a: 5, b: 2 }
    ])
    // arguments the tool's schema refuses never reach the server
    const bad = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "x", tool: "mcp.calc.add", input: { a: "two", b: 3 } }] }
    })
    expect(bad.status).toBe(400)
    expect(bad.body.error.details.field).toContain("a")
    const zero = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "z", tool: "mcp.calc.divide_by", input: { a: 1, b: 0 } }] }
    })
    expect(zero.body.status).toBe("failed")
    expect(zero.body.steps[0].error).toMatchObject({ code: "tool_failed" })
    expect(zero.body.steps[0].error.message).toBe("calc: cannot divide by zero")

    fake.script(
      { kind: "tools", calls: [{ name: "mcp-calc-add", arguments: `{"a": 40, "b": 2}` }] },
      { kind: "answer", content: "42" }
    )
    const nl = await edge.call("POST", "/v1/tasks", member, { input: "add 40 and 2", tools: ["mcp.calc.add"] })
    expect(nl.body.status, nl.text).toBe("succeeded")
    expect(nl.body.output).toBe("42")
    const offered = fake.received.at(-2)!.body.tools.map((t: any) => t.function.name)
    expect(offered).toEqual(["mcp-calc-add"])
  })

  it("a refresh picks up the server's changed tool list; a removed server's tools are gone", async () => {
    tools = [calculator[0]!, {
      name: "square",
      description: "Squares a",
      inputSchema: { type: "object", properties: { a: { type: "number" } } },
      annotations: { readOnlyHint: true }
    }]
    const refreshed = await edge.call("POST", "/v1/mcp/servers/calc/refresh", admin)
    expect(refreshed.status, refreshed.text).toBe(200)
    expect(refreshed.body.imported.map((t: any) => t.tool_id)).toEqual(["mcp.calc.add", "mcp.calc.square"])
    const ids = (await edge.call("GET", "/v1/tools", member)).body.map((t: any) => t.tool_id)
    expect(ids).toContain("mcp.calc.square")
    expect(ids).not.toContain("mcp.calc.divide_by")
    const gone = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "x", tool: "mcp.calc.divide_by", input: { a: 1, b: 1 } }] }
    })
    expect(gone.status, gone.text).toBe(400)
    expect(gone.body.error.code).toBe("unknown_tool")
    // a tenant tool cannot take an imported tool's id
    const squat = await edge.call("PUT", "/v1/tools/mcp.calc.mine", admin, {
      tool_id: "mcp.calc.mine",
      name: "Mine",
      parameters: [],
      endpoint: "https://example.com/x",
      method: "GET",
      auth: "none"
    })
    expect(squat.status, squat.text).toBe(400)

    // the admin's choice of tools holds across refreshes
    const narrowed = await edge.call("PUT", "/v1/mcp/servers/calc", admin, {
      url: `http://${remoteHost}/mcp`,
      connection: "calc",
      tools: ["add"]
    })
    expect(narrowed.body.imported.map((t: any) => t.name)).toEqual(["add"])
    const again = await edge.call("POST", "/v1/mcp/servers/calc/refresh", admin)
    expect(again.body.tools).toEqual(["add"])
    expect(again.body.imported.map((t: any) => t.name)).toEqual(["add"])
    expect((await edge.call("DELETE", "/v1/mcp/servers/calc", admin)).status).toBe(204)
    expect((await edge.call("DELETE", "/v1/mcp/servers/calc", admin)).status).toBe(404)
    const after = (await edge.call("GET", "/v1/tools", member)).body.map((t: any) => t.tool_id)
    expect(after.filter((id: string) => id.startsWith("mcp."))).toEqual([])
    tools = [...calculator]
    expect((await putServer()).status).toBe(200)
  })

  it("another tenant never lists, reads or calls a tenant's servers or their tools", async () => {
    expect((await edge.call("GET", "/v1/mcp/servers", otherAdmin)).body).toEqual([])
    expect((await edge.call("GET", "/v1/mcp/servers/calc", otherAdmin)).status).toBe(404)
    expect((await edge.call("POST", "/v1/mcp/servers/calc/refresh", otherAdmin)).status).toBe(404)
    expect((await edge.call("DELETE", "/v1/mcp/servers/calc", otherAdmin)).status).toBe(404)
    const ids = (await edge.call("GET", "/v1/tools", otherAdmin)).body.map((t: any) => t.tool_id)
    expect(ids.filter((id: string) => id.startsWith("mcp."))).toEqual([])
    const call = await edge.call("POST", "/v1/tasks", otherAdmin, {
      input: { steps: [{ id: "x", tool: "mcp.calc.add", input: { a: 1, b: 1 } }] }
    })
    expect(call.status).toBe(400)
    expect(call.body.error.code).toBe("unknown_tool")
    // still the owner's
    expect((await edge.call("GET", "/v1/mcp/servers/calc", admin)).status).toBe(200)
  })

  it("keeps a server's MCP session across calls, and opens a new one when the server forgot it", async () => {
    const put = await edge.call("PUT", "/v1/mcp/servers/sess", admin, { url: `http://${remoteHost}/stateful/mcp` })
    expect(put.status, put.text).toBe(200)
    initializes = 0
    const add = (a: number) =>
      edge.call("POST", "/v1/tasks", member, {
        input: { steps: [{ id: "s", tool: "mcp.sess.add", input: { a, b: 1 } }] }
      })
    expect((await add(1)).body.output).toEqual({ sum: 2 })
    expect((await add(2)).body.output).toEqual({ sum: 3 })
    // one session for both calls
    expect(initializes).toBe(1)
    // the server restarts and forgets every session: the call opens a new one and is made once
    stateful.clear()
    const after = await add(3)
    expect(after.body.status, after.text).toBe("succeeded")
    expect(after.body.output).toEqual({ sum: 4 })
    expect(after.body.steps[0].attempts).toBe(1)
    expect(initializes).toBe(2)
  })

  it("picks up a server's tools/list_changed said during a call: its tools are imported again", async () => {
    growing = [{
      name: "grow",
      description: "Adds a tool",
      inputSchema: { type: "object", properties: {} },
      annotations: { readOnlyHint: false }
    }]
    const put = await edge.call("PUT", "/v1/mcp/servers/growing", admin, { url: `http://${remoteHost}/growing/mcp` })
    expect(put.status, put.text).toBe(200)
    expect(put.body.imported.map((t: any) => t.tool_id)).toEqual(["mcp.growing.grow"])
    const grown = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "g", tool: "mcp.growing.grow", input: {} }] }
    })
    expect(grown.body.status, grown.text).toBe("succeeded")
    expect(grown.body.output).toBe("grown")
    // imported again beside the call, with no refresh asked
    let ids: Array<string> = []
    for (let i = 0; i < 50 && !ids.includes("mcp.growing.added_1"); i++) {
      await new Promise((r) => setTimeout(r, 100))
      ids = (await edge.call("GET", "/v1/tools", member)).body.map((t: any) => t.tool_id)
    }
    expect(ids).toContain("mcp.growing.added_1")
    expect((await edge.call("DELETE", "/v1/mcp/servers/growing", admin)).status).toBe(204)
  })

  it("a server that goes down fails its calls as an upstream, and opens the breaker like any", async () => {
    // a second copy of the calculator, imported, then stopped
    const down = createServer((req, res) => void serve(req, res))
    await new Promise<void>((r) => down.listen(0, "127.0.0.1", r))
    const url = `http://127.0.0.1:${(down.address() as { port: number }).port}/mcp`
    const put = await edge.call("PUT", "/v1/mcp/servers/flaky", admin, { url, connection: "calc" })
    expect(put.status, put.text).toBe(200)
    down.closeAllConnections()
    await new Promise((r) => down.close(r))
    const call = () =>
      edge.call("POST", "/v1/tasks", member, {
        input: { steps: [{ id: "f", tool: "mcp.flaky.add", input: { a: 1, b: 1 } }] }
      })
    const first = await call()
    expect(first.body.status).toBe("failed")
    // refused connections: tried again (nothing was sent), then failed as the upstream's fault
    expect(first.body.steps[0].error.message).toContain("ECONNREFUSED")
    expect(first.body.steps[0].attempts).toBe(3)
    await call()
    // the server's connection (`calc`) counted the failures: its breaker is open, calls fail fast
    const fast = await call()
    expect(fast.body.steps[0].error.code, JSON.stringify(fast.body.steps[0])).toBe("upstream_unavailable")
    expect(fast.body.steps[0].error.details.provider).toBe("calc")
    expect((await edge.call("DELETE", "/v1/mcp/servers/flaky", admin)).status).toBe(204)
  })

  it("a server that cannot be reached, or a connection that is not there, is a clear error", async () => {
    const unreachable = await edge.call("PUT", "/v1/mcp/servers/down", admin, { url: "http://127.0.0.1:9/mcp" })
    expect(unreachable.status, unreachable.text).toBe(502)
    expect(unreachable.body.error.message).toContain("could not be reached")
    const noConnection = await edge.call("PUT", "/v1/mcp/servers/nokey", admin, {
      url: `http://${remoteHost}/mcp`,
      connection: "missing"
    })
    expect(noConnection.status).toBe(400)
    expect(noConnection.body.error.details.field).toBe("connection")
    // the server refuses a request without its key: the import says how it answered
    const keyless = await edge.call("PUT", "/v1/mcp/servers/keyless", admin, { url: `http://${remoteHost}/mcp` })
    expect(keyless.status, keyless.text).toBe(502)
    expect(keyless.body.error.message, keyless.text).toContain("401")
  })
})
