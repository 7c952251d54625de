import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Tracer from "effect/Tracer"
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http"
import Provider from "oidc-provider"
import { makeProbes, sleep, startEdge } from "./fixtures.js"

// An OAuth 2.1-protected remote MCP server, as the MCP authorization specification has it: an SDK server on loopback
// that takes only bearer tokens of its authorization server (the real `oidc-provider`) issued for its own URL (RFC 8707),
// says where its protected resource metadata is (RFC 9728) in its 401. The runtime discovers the authorization server
// (RFC 8414 / OpenID Connect), registers a client (RFC 7591), has the tenant's user consent (PKCE S256), imports the
// server's tools once the grant is given, refreshes an expired token once, waits for consent again when the grant is
// lost, and revokes the grant when the server is removed.

const accessTokenTtl = 3 // seconds
const clientIds: Array<string> = []

let edge: Awaited<ReturnType<typeof startEdge>>
let admin = ""
let member = ""
let idp: HttpServer
let issuer = ""
let provider: any
/** An authorization server that offers no registration. */
let closedIdp: HttpServer
let closedIssuer = ""
let closedProvider: any
let mcp: HttpServer
let mcpBase = ""
/** The MCP server's own URL: the resource its tokens must be for. */
let mcpUrl = ""

/** Token-endpoint grants the authorization server answered: type and the resource it was asked for. */
const grants: Array<{ type: string; resource: unknown }> = []
const revocations: Array<string> = []
/** The requests the MCP server got: the bearer token, whether it took it, and the JSON-RPC method. */
const received: Array<{ token: string; valid: boolean; method?: string }> = []

/** Every secret the run handed out (tokens, codes, states, the registered client's secret): none may be recorded. */
const handedOut = new Set<string>()

/** Every span of the edge's runtime as an exporter would send it. */
const spans: Array<{ name: string; attributes: ReadonlyMap<string, unknown>; events: Array<unknown>; end?: string }> =
  []
const capturing = (): Tracer.Tracer => {
  const native = Effect.runSync(Effect.tracer)
  return Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      const record: (typeof spans)[number] = { name: span.name, attributes: span.attributes, events: [] }
      spans.push(record)
      const end = span.end.bind(span)
      span.end = (endTime, exit) => {
        record.end = Exit.isFailure(exit) ? Cause.pretty(exit.cause, { renderErrorCause: true }) : "ok"
        end(endTime, exit)
      }
      const event = span.event.bind(span)
      span.event = (name, startTime, attributes) => {
        record.events.push([name, attributes])
        event(name, startTime, attributes)
      }
      return span
    },
    context: (f) => f()
  })
}

const makeProvider = (url: string, registration: boolean, clients: Array<Record<string, unknown>> = []) => {
  const p = new Provider(url, {
    clients,
    scopes: ["openid", "offline_access"],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async () => true,
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: registration },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, indicator: string) => {
          // tokens only for the MCP servers
          if (indicator !== mcpUrl && indicator !== `${mcpBase}/closed/mcp`) {
            throw new Error(`unknown resource ${indicator}`)
          }
          return {
            scope: "mcp:tools",
            audience: indicator,
            accessTokenFormat: "opaque",
            accessTokenTTL: accessTokenTtl
          }
        }
      }
    },
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      RefreshToken: 3600,
      Grant: 3600,
      Interaction: 600,
      Session: 600
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    findAccount: (_ctx: unknown, sub: string) => ({ accountId: sub, claims: () => ({ sub }) }),
    cookies: { keys: ["test-cookie-key"] }
  })
  const callback = p.callback()
  // the user's consent, given at once: login as user-1 and grant what was asked, for the resource asked
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith("/interaction/")) {
      const details = await p.interactionDetails(req, res)
      const grant = new p.Grant({ accountId: "user-1", clientId: details.params.client_id })
      const oidcScopes = String(details.params.scope ?? "").split(" ").filter((s: string) =>
        s === "openid" || s === "offline_access"
      )
      if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(" "))
      if (details.params.resource) grant.addResourceScope(String(details.params.resource), "mcp:tools")
      const grantId = await grant.save()
      return p.interactionFinished(req, res, { login: { accountId: "user-1" }, consent: { grantId } }, {
        mergeWithLastSubmission: false
      })
    }
    if (req.url === "/token/revocation" && req.method === "POST") revocations.push(req.url)
    callback(req, res)
  }
  return { provider: p, handle }
}

const calculator = {
  name: "add",
  description: "Adds two numbers",
  inputSchema: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
  outputSchema: { type: "object", properties: { sum: { type: "number" } }, required: ["sum"] },
  annotations: { readOnlyHint: true }
}

/** The protected MCP server (stateless): a live token of its authorization server, issued for this server, or 401. */
const serveMcp = async (req: IncomingMessage, res: ServerResponse, path: string, as: () => any) => {
  const resourceMetadata = `${mcpBase}/.well-known/oauth-protected-resource${path}`
  if (req.method === "GET" && req.url === `/.well-known/oauth-protected-resource${path}`) {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
      resource: `${mcpBase}${path}`,
      authorization_servers: [path === "/mcp" ? issuer : closedIssuer],
      scopes_supported: ["mcp:tools", "offline_access"],
      bearer_methods_supported: ["header"]
    }))
    return
  }
  const token = (req.headers.authorization ?? "").replace(/^Bearer /, "")
  const found = token ? await as().AccessToken.find(token) : undefined
  // RFC 8707: a token for another resource is not one for this server
  const valid = found !== undefined && !found.isExpired && found.aud === `${mcpBase}${path}`
  const chunks: Array<Buffer> = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined
  received.push({ token, valid, method: body?.method })
  if (token) handedOut.add(token)
  if (!valid) {
    res.writeHead(401, {
      "content-type": "application/json",
      "www-authenticate": `Bearer resource_metadata="${resourceMetadata}"`
    }).end(JSON.stringify({ error: "invalid_token" }))
    return
  }
  const server = new Server({ name: "secure-calc", version: "1.0.0" }, { capabilities: { tools: {} } })
  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: [calculator] }) as any)
  server.setRequestHandler(CallToolRequestSchema, (request) => {
    const args = request.params.arguments as { a: number; b: number }
    return { content: [{ type: "text", text: String(args.a + args.b) }], structuredContent: { sum: args.a + args.b } }
  })
  const transport = new StreamableHTTPServerTransport({ enableJsonResponse: true })
  res.on("close", () => void transport.close())
  await server.connect(transport)
  await transport.handleRequest(req, res, body)
}

/** Follows redirects by hand with a cookie jar, as a browser would, until one leaves the authorization server. */
const browse = async (start: string): Promise<string> => {
  const jar = new Map<string, string>()
  let url = start
  for (let i = 0; i < 10; i++) {
    const res = await fetch(url, {
      redirect: "manual",
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") }
    })
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";")
      const eq = pair!.indexOf("=")
      jar.set(pair!.slice(0, eq), pair!.slice(eq + 1))
    }
    const location = res.headers.get("location")
    if (location === null) throw new Error(`no redirect from ${url}: ${res.status} ${await res.text()}`)
    const next = new URL(location, url).href
    if (!next.startsWith(issuer) && !next.startsWith(closedIssuer)) return next
    url = next
  }
  throw new Error("too many redirects")
}

/** The user consents at the link; the edge's callback answers. */
const consent = async (authorizeUrl: string) => {
  const callback = await browse(authorizeUrl)
  expect(callback.startsWith(`${edge.base}/v1/oauth/callback?`)).toBe(true)
  for (const name of ["code", "state"]) handedOut.add(new URL(callback).searchParams.get(name)!)
  const res = await fetch(callback)
  return { status: res.status, body: await res.json() as any }
}

const add = (a: number, b: number) =>
  edge.call("POST", "/v1/tasks", member, {
    input: { steps: [{ id: "sum", tool: "mcp.secure.add", input: { a, b } }] },
    timeout_ms: 20_000
  })

const listen = async (server: HttpServer) => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

beforeAll(async () => {
  edge = await startEdge(makeProbes(), { tracer: capturing() })
  admin = await edge.sign({ tenant_id: "mcp-oauth", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "mcp-oauth", role: "member", sub: "ana" })

  idp = createServer()
  issuer = await listen(idp)
  const open = makeProvider(issuer, true)
  provider = open.provider
  provider.on(
    "grant.success",
    (ctx: any) => grants.push({ type: ctx.oidc.params.grant_type, resource: ctx.oidc.params.resource })
  )
  provider.on("registration_create.success", (ctx: any) => {
    clientIds.push(ctx.oidc.entities.Client.clientId)
    handedOut.add(ctx.oidc.entities.Client.clientSecret)
  })
  provider.on("refresh_token.saved", (token: any) => handedOut.add(token.jti))
  idp.on("request", (req, res) => void open.handle(req, res))

  closedIdp = createServer()
  closedIssuer = await listen(closedIdp)
  // a public client registered there beforehand (no secret: PKCE alone binds the code)
  const closed = makeProvider(closedIssuer, false, [{
    client_id: "pre-registered",
    token_endpoint_auth_method: "none",
    redirect_uris: [`${edge.base}/v1/oauth/callback`],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"]
  }])
  closedProvider = closed.provider
  closedIdp.on("request", (req, res) => void closed.handle(req, res))

  mcp = createServer((req, res) =>
    void (req.url?.includes("/closed")
      ? serveMcp(req, res, "/closed/mcp", () => closedProvider)
      : serveMcp(req, res, "/mcp", () => provider))
  )
  mcpBase = await listen(mcp)
  mcpUrl = `${mcpBase}/mcp`
  const hosts = [mcpBase, issuer, closedIssuer].map((u) => new URL(u).host)
  expect((await edge.call("PUT", "/v1/settings", admin, { egress_allowlist: hosts })).status).toBe(200)
})

afterAll(async () => {
  await edge.close()
  for (const server of [idp, closedIdp, mcp]) {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  }
})

describe("an OAuth 2.1-protected remote MCP server", () => {
  let authorizeUrl = ""

  it("is discovered, a client registered, and answered needs_authorization with a PKCE S256 link for its URL", async () => {
    const put = await edge.call("PUT", "/v1/mcp/servers/secure", admin, { url: mcpUrl, auth: "oauth2" })
    expect(put.status, put.text).toBe(200)
    expect(put.body).toMatchObject({ server_id: "secure", auth: "oauth2", status: "needs_authorization", imported: [] })
    // dynamic registration at the discovered authorization server, redirecting to the edge's callback
    expect(clientIds).toHaveLength(1)
    const client = await provider.Client.find(clientIds[0])
    expect(client.redirectUris).toEqual([`${edge.base}/v1/oauth/callback`])
    authorizeUrl = put.body.authorize_url
    const url = new URL(authorizeUrl)
    expect(url.origin).toBe(issuer)
    expect(url.searchParams.get("client_id")).toBe(clientIds[0])
    expect(url.searchParams.get("code_challenge_method")).toBe("S256")
    expect(url.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(url.searchParams.get("resource")).toBe(mcpUrl)
    expect(url.searchParams.get("scope")).toBe("mcp:tools offline_access")
    // the registered client's secret went to the vault, never into an answer
    expect(client.clientSecret).toEqual(expect.any(String))
    expect(put.text).not.toContain(client.clientSecret)
    const connections = await edge.call("GET", "/v1/connections", admin)
    expect(connections.body).toEqual([expect.objectContaining({ provider: "mcp-secure", status: "pending" })])
    expect(connections.text).not.toContain(client.clientSecret)
    // no tools before the grant
    const ids = (await edge.call("GET", "/v1/tools", member)).body.map((t: any) => t.tool_id)
    expect(ids.filter((id: string) => id.startsWith("mcp."))).toEqual([])
  })

  it("imports the server's tools once the user consents, and calls them with a bearer token for the server", async () => {
    received.length = 0
    const done = await consent(authorizeUrl)
    expect(done.status, JSON.stringify(done.body)).toBe(200)
    expect(done.body).toMatchObject({ provider: "mcp-secure", status: "connected" })
    expect(grants.map((g) => g.type)).toEqual(["authorization_code"])
    expect(grants[0]!.resource).toBe(mcpUrl)
    const server = await edge.call("GET", "/v1/mcp/servers/secure", admin)
    expect(server.body).toMatchObject({ status: "ready", imported: [{ tool_id: "mcp.secure.add", read_only: true }] })
    expect(received.length).toBeGreaterThan(0)
    expect(received.every((r) => r.valid)).toBe(true)

    received.length = 0
    const task = await add(2, 3)
    expect(task.body.status, task.text).toBe("succeeded")
    expect(task.body.output).toEqual({ sum: 5 })
    expect(received.filter((r) => r.method === "tools/call")).toHaveLength(1)
    expect(received.every((r) => r.valid)).toBe(true)
    expect(task.text).not.toContain(received[0]!.token)
  })

  it("refreshes an expired token once, naming the resource, and a token the server refuses once more", async () => {
    await sleep(accessTokenTtl * 1000 + 300)
    grants.length = 0
    received.length = 0
    const tasks = await Promise.all([add(1, 1), add(2, 2), add(3, 3)])
    for (const t of tasks) expect(t.body.status, t.text).toBe("succeeded")
    expect(grants).toEqual([{ type: "refresh_token", resource: mcpUrl }])
    expect(received.every((r) => r.valid)).toBe(true)

    // the authorization server drops the live token before its time: the server's 401, one refresh, the call again
    const live = await provider.AccessToken.find(received.at(-1)!.token)
    await live.destroy()
    grants.length = 0
    received.length = 0
    const again = await add(4, 4)
    expect(again.body.status, again.text).toBe("succeeded")
    expect(again.body.output).toEqual({ sum: 8 })
    expect(grants).toEqual([{ type: "refresh_token", resource: mcpUrl }])
    expect(received.some((r) => !r.valid)).toBe(true)
    expect(received.filter((r) => r.method === "tools/call" && r.valid)).toHaveLength(1)
  })

  it("waits for consent again when the grant is lost, and goes on once the user gives it", async () => {
    received.length = 0
    expect((await add(1, 2)).body.status).toBe("succeeded")
    const found = await provider.AccessToken.find(received.at(-1)!.token)
    await (await provider.Grant.find(found.grantId)).destroy()
    await provider.RefreshToken.adapter.revokeByGrantId(found.grantId)
    await sleep(accessTokenTtl * 1000 + 300)

    const waiting = await add(5, 5)
    expect(waiting.status, waiting.text).toBe(202)
    expect(waiting.body.steps[0]).toMatchObject({
      status: "waiting_connection",
      connection: { provider: "mcp-secure", reason: "needs_reauth" }
    })
    const link = new URL(waiting.body.waiting_for[0].authorize_url)
    expect(link.origin).toBe(issuer)
    expect(link.searchParams.get("resource")).toBe(mcpUrl)
    expect(link.searchParams.get("code_challenge_method")).toBe("S256")
    expect((await consent(link.href)).status).toBe(200)
    let task: any
    for (let i = 0; i < 100; i++) {
      task = (await edge.call("GET", `/v1/tasks/${waiting.body.task_id}`, member)).body
      if (task.status === "succeeded" || task.status === "failed") break
      await sleep(100)
    }
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(task.output).toEqual({ sum: 10 })
  })

  it("revokes the grant at the authorization server when the server is removed", async () => {
    received.length = 0
    expect((await add(1, 1)).body.status).toBe("succeeded")
    const token = received.at(-1)!.token
    revocations.length = 0
    const removed = await edge.call("DELETE", "/v1/mcp/servers/secure", admin)
    expect(removed.status, removed.text).toBe(204)
    // the refresh token, then the access token (RFC 7009)
    expect(revocations).toHaveLength(2)
    expect(await provider.AccessToken.find(token)).toBeUndefined()
    expect((await edge.call("GET", "/v1/connections", admin)).body).toEqual([])
    const secrets = (await edge.call("GET", "/v1/secrets", admin)).text
    expect(secrets).not.toContain("mcp-secure")
    const ids = (await edge.call("GET", "/v1/tools", member)).body.map((t: any) => t.tool_id)
    expect(ids.filter((id: string) => id.startsWith("mcp."))).toEqual([])
  })

  it("refuses clearly when the authorization server offers no registration and no client_id is given; takes a given one", async () => {
    const url = `${mcpBase}/closed/mcp`
    const put = await edge.call("PUT", "/v1/mcp/servers/closed", admin, { url, auth: "oauth2" })
    expect(put.status, put.text).toBe(400)
    expect(put.body.error.code).toBe("invalid_mcp_server")
    expect(put.body.error.message).toContain("offers no dynamic client registration")
    expect(put.body.error.message).toContain("client_id")
    expect((await edge.call("GET", "/v1/mcp/servers", admin)).body).toEqual([])
    // a client registered there beforehand: no registration, its id in the link
    const given = await edge.call("PUT", "/v1/mcp/servers/closed", admin, {
      url,
      auth: "oauth2",
      client_id: "pre-registered",
      scopes: ["mcp:tools"]
    })
    expect(given.status, given.text).toBe(200)
    expect(given.body.status).toBe("needs_authorization")
    const link = new URL(given.body.authorize_url)
    expect(link.origin).toBe(closedIssuer)
    expect(link.searchParams.get("client_id")).toBe("pre-registered")
    expect(link.searchParams.get("resource")).toBe(url)
    // the user consents: a public client's code exchange (no secret), then the server's tools
    expect((await consent(given.body.authorize_url)).status).toBe(200)
    const ready = await edge.call("GET", "/v1/mcp/servers/closed", admin)
    expect(ready.body).toMatchObject({ status: "ready", imported: [{ tool_id: "mcp.closed.add" }] })
    const task = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "sum", tool: "mcp.closed.add", input: { a: 20, b: 22 } }] }
    })
    expect(task.body.status, task.text).toBe("succeeded")
    expect(task.body.output).toEqual({ sum: 42 })
    expect((await edge.call("DELETE", "/v1/mcp/servers/closed", admin)).status).toBe(204)
    // discovery goes through the egress guard: a host neither the operator nor the tenant allows is not asked
    const denied = await edge.call("PUT", "/v1/mcp/servers/far", admin, {
      url: "http://127.0.0.2:8080/mcp",
      auth: "oauth2"
    })
    expect(denied.status, denied.text).toBe(400)
    expect(denied.body.error).toMatchObject({ code: "egress_denied", details: { field: "url" } })
    expect(denied.body.error.message).toContain("egress_allowlist")
  })
  it("keeps the registered client's secret, the codes, states and tokens out of every span and audit record", () => {
    // the tracer saw discovery, registration, the exchange and the refreshes: its silence is not an accident
    const names = new Set(spans.map((s) => s.name))
    for (const name of ["Connection.setUpMcpAuthorization", "McpAuthorization.setUp", "OAuth.requestTokens"]) {
      expect(names.has(name), name).toBe(true)
    }
    expect(handedOut.size).toBeGreaterThan(8)
    const recorded = JSON.stringify([
      spans.map((s) => [s.name, [...s.attributes.entries()], s.events, s.end]),
      edge.audit()
    ])
    for (const secret of handedOut) {
      expect(recorded.includes(secret), "a span or audit record holds a secret").toBe(false)
    }
  })
})
