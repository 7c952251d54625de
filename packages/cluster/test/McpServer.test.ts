import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js"
import { createServer, type Server } from "node:http"
import { issuer, makeProbes, startEdge } from "./fixtures.js"

// The tenant's catalog served as an MCP server at /mcp, driven by the MCP SDK's own client over Streamable HTTP:
// the API's bearer token is the caller's identity, each tool call is a task of the MCP session, and another tenant
// sees and calls only its own tools.

const received: Array<{ authorization?: string | undefined; body: any }> = []
let vendor: Server
let vendorBase = ""
let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let member = ""
let otherMember = ""

/** An MCP client of the edge, authenticated with `token`. */
const connect = async (token: string) => {
  const client = new Client({ name: "altan-test", version: "1.0.0" })
  const transport = new StreamableHTTPClientTransport(new URL(`${edge.base}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } }
  })
  await client.connect(transport)
  return { client, transport }
}

beforeAll(async () => {
  vendor = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      received.push({ authorization: req.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString()) })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ id: "c-17", created: true }))
    })
  })
  await new Promise<void>((r) => vendor.listen(0, "127.0.0.1", r))
  vendorBase = `http://127.0.0.1:${(vendor.address() as { port: number }).port}`
  edge = await startEdge(makeProbes())
  admin = await edge.sign({ tenant_id: "mcp-a", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "mcp-a", role: "member", sub: "ana" })
  otherMember = await edge.sign({ tenant_id: "mcp-b", role: "member", sub: "eve" })
  // tenant A: a custom HTTP tool with its API key, and one that waits for approval
  expect((await edge.call("PUT", "/v1/secrets/crm_key", admin, { value: "crm-key-5e1" })).status).toBe(204)
  expect(
    (await edge.call("PUT", "/v1/connections/crm", admin, { type: "api_key", secret: "crm_key", prefix: "Bearer " }))
      .status
  ).toBe(200)
  const tool = await edge.call("PUT", "/v1/tools/crm_create", admin, {
    tool_id: "crm_create",
    name: "Create a CRM contact",
    description: "Creates a contact in the CRM",
    parameters: [{ name: "email", type: "string" }, { name: "age", type: "integer", required: false }],
    endpoint: `${vendorBase}/contacts`,
    method: "POST",
    auth: "api_key",
    provider: "crm"
  })
  expect(tool.status, tool.text).toBe(200)
  expect(
    (await edge.call("PUT", "/v1/tools/crm_delete", admin, {
      tool_id: "crm_delete",
      name: "Delete a CRM contact",
      parameters: [{ name: "id", type: "string" }],
      endpoint: `${vendorBase}/contacts/delete`,
      method: "POST",
      auth: "api_key",
      provider: "crm",
      requires_approval: true
    })).status
  ).toBe(200)
})

afterAll(async () => {
  await edge.close()
  vendor.closeAllConnections()
  await new Promise((r) => vendor.close(r))
})

describe("the tenant's catalog as an MCP server", () => {
  it("initializes, lists the tenant's tools with their schemas and hints, and runs a utility tool as a task", async () => {
    const { client, transport } = await connect(member)
    expect(client.getServerVersion()).toMatchObject({ name: "altan" })
    expect(transport.sessionId).toMatch(/^[0-9a-f-]{36}$/)
    expect(transport.protocolVersion).toBe(LATEST_PROTOCOL_VERSION)

    const { tools } = await client.listTools()
    const byName = new Map(tools.map((t) => [t.name, t]))
    expect(byName.get("crm_create")).toMatchObject({
      title: "Create a CRM contact",
      inputSchema: { type: "object", properties: { email: { type: "string" } } },
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true }
    })
    expect(byName.get("crm_delete")!.description).toContain("approval")
    expect(byName.get("crm_delete")!._meta).toEqual({ "altan/requires_approval": true })
    expect(byName.get("text.template")).toMatchObject({
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      outputSchema: { type: "object" }
    })

    const result = await client.callTool({
      name: "text.template",
      arguments: { template: "hello {{who}}", variables: { who: "mcp" } }
    })
    expect(result.isError).toBeFalsy()
    expect(result.structuredContent).toEqual({ text: "hello mcp" })
    expect(result.content).toEqual([{ type: "text", text: JSON.stringify({ text: "hello mcp" }) }])
    // the call is a task of the MCP session's own task session, listed like any other
    const listed = await edge.call("GET", `/v1/tasks?session_id=mcp-${transport.sessionId}`, member)
    expect(listed.body.tasks).toHaveLength(1)
    expect(listed.body.tasks[0]).toMatchObject({ status: "succeeded", kind: "plan", user_id: "ana" })
    await client.close()
  })

  it("calls a custom HTTP tool with the tenant's credential; bad arguments are tool errors, unknown tools protocol errors", async () => {
    const { client } = await connect(member)
    received.length = 0
    const created = await client.callTool({ name: "crm_create", arguments: { email: "ada@example.com", age: 36 } })
    expect(created.isError, JSON.stringify(created)).toBeFalsy()
    expect(created.structuredContent).toEqual({ id: "c-17", created: true })
    expect(received).toEqual([{ authorization: "Bearer crm-key-5e1", body: { email: "ada@example.com", age: 36 } }])
    // the credential never shows in what the client gets
    expect(JSON.stringify(created)).not.toContain("crm-key-5e1")

    // arguments the schema refuses: a tool error naming the field, for the model to correct (2025-11-25)
    const bad = await client.callTool({ name: "crm_create", arguments: { email: 42 } })
    expect(bad.isError).toBe(true)
    expect((bad.content as Array<{ text: string }>)[0]!.text).toMatch(/^invalid arguments for crm_create \(email\)/)
    const unknown = await client.callTool({ name: "nope_tool", arguments: {} }).catch((e) => e)
    expect(unknown.code).toBe(-32602)
    expect(unknown.message).toContain("unknown tool: nope_tool")
    expect(received).toHaveLength(1)

    // a call that needs a person's approval is not made: the answer says it waits, and where to follow it
    const waiting = await client.callTool({ name: "crm_delete", arguments: { id: "c-17" } })
    expect(waiting.isError).toBe(true)
    expect((waiting.content as Array<{ text: string }>)[0]!.text).toMatch(/waits \(approval\): task mcp-/)
    expect(received).toHaveLength(1)
    await client.close()
  })

  it("an upstream failure is a tool error with our code and message, never the secret", async () => {
    const failing = createServer((req, res) => {
      req.resume().on("end", () => {
        res.writeHead(500, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: `boom for ${req.headers.authorization}` }))
      })
    })
    await new Promise<void>((r) => failing.listen(0, "127.0.0.1", r))
    try {
      const put = await edge.call("PUT", "/v1/tools/crm_broken", admin, {
        tool_id: "crm_broken",
        name: "Broken",
        parameters: [{ name: "x", type: "string" }],
        endpoint: `http://127.0.0.1:${(failing.address() as { port: number }).port}/x`,
        method: "POST",
        auth: "api_key",
        provider: "crm",
        max_attempts: 1
      })
      expect(put.status, put.text).toBe(200)
      const { client } = await connect(member)
      const result = await client.callTool({ name: "crm_broken", arguments: { x: "y" } })
      expect(result.isError).toBe(true)
      const text = (result.content as Array<{ text: string }>)[0]!.text
      expect(text).toMatch(/^tool_failed: /)
      expect(text).not.toContain("crm-key-5e1")
      await client.close()
    } finally {
      failing.closeAllConnections()
      await new Promise((r) => failing.close(r))
    }
  })

  it("another tenant sees and calls only its own tools, and cannot use another's session", async () => {
    const mine = await connect(member)
    const { client } = await connect(otherMember)
    const names = (await client.listTools()).tools.map((t) => t.name)
    expect(names).toContain("text.template")
    expect(names).not.toContain("crm_create")
    const refused = await client.callTool({ name: "crm_create", arguments: { email: "x@example.com" } }).catch((e) => e)
    expect(refused.code).toBe(-32602)
    // tenant A's session id with tenant B's token: not found, as if it never existed
    const hijack = await fetch(`${edge.base}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${otherMember}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": mine.transport.sessionId!,
        "mcp-protocol-version": LATEST_PROTOCOL_VERSION
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" })
    })
    expect(hijack.status).toBe(404)
    await client.close()
    await mine.client.close()
  })

  it("without a valid token: 401 naming the protected-resource metadata, which names the authorization server", async () => {
    const initialize = {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "x", version: "1" } }
    }
    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" }
    const none = await fetch(`${edge.base}/mcp`, { method: "POST", headers, body: JSON.stringify(initialize) })
    expect(none.status).toBe(401)
    const challenge = none.headers.get("www-authenticate")!
    expect(challenge).toBe(`Bearer resource_metadata="${edge.base}/.well-known/oauth-protected-resource/mcp"`)
    const bad = await fetch(`${edge.base}/mcp`, {
      method: "POST",
      headers: { ...headers, authorization: "Bearer not-a-token" },
      body: JSON.stringify(initialize)
    })
    expect(bad.status).toBe(401)
    expect(bad.headers.get("www-authenticate")).toContain(`error="invalid_token"`)
    // the SDK's client gets the same refusal
    const refused = await connect("not-a-token").catch((e) => e)
    expect(refused).toBeInstanceOf(Error)

    // RFC 9728: the resource's metadata at the path the challenge names, the origin's at the root
    const root = await fetch(`${edge.base}/.well-known/oauth-protected-resource`)
    expect((await root.json() as any).resource).toBe(edge.base)
    const metadata = await fetch(`${edge.base}/.well-known/oauth-protected-resource/mcp`)
    expect(metadata.status).toBe(200)
    expect(await metadata.json()).toEqual({
      resource: `${edge.base}/mcp`,
      authorization_servers: [issuer],
      scopes_supported: ["openid"],
      bearer_methods_supported: ["header"],
      resource_name: "Altan agent runtime (MCP)",
      resource_documentation: `${edge.base}/docs`
    })
    // a method /mcp does not serve
    expect((await fetch(`${edge.base}/mcp`, { method: "PUT" })).status).toBe(405)
  })
})
