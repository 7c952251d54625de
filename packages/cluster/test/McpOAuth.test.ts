import { ConnectionStore } from "@altan/integrator/ConnectionStore"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Server } from "@modelcontextprotocol/sdk/server/index.js"
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js"
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import * as Effect from "effect/Effect"
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http"
import Provider from "oidc-provider"
import {
  browse as browseTo,
  capturingLogger,
  capturingTracer,
  ended,
  makeProbes,
  sleep,
  startEdge
} from "./fixtures.js"

// An OAuth 2.1-protected remote MCP server, as the MCP authorization specification has it: an SDK server on loopback
// that takes only bearer tokens of its authorization server (the real `oidc-provider`) issued for its own URL (RFC 8707),
// says where its protected resource metadata is (RFC 9728) in its 401. The runtime discovers the authorization server
// (RFC 8414 / OpenID Connect), registers a client (RFC 7591), has the tenant's user consent (PKCE S256), imports the
// server's tools once the grant is given, refreshes an expired token once, waits for consent again when the grant is
// lost, and revokes the grant when the server is removed. A token is only ever sent to the server it is for.

/** The lifetime of the access tokens the authorization server issues now (seconds): long, unless a test says. */
let tokenTtl = 30
/** The lifetime a test gives the next token when it wants it to expire (seconds). */
const shortTtl = 4
/** While set, the authorization servers' revocation endpoints fail (503), as a server that is down. */
let revocationDown = false
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
/** The revocation requests, by authorization server (`open` or `closed`). */
const revocations: Array<string> = []
/** The requests the MCP servers got: the path, the bearer token, whether it was taken, and the JSON-RPC method. */
const received: Array<{ path: string; token: string; valid: boolean; method?: string }> = []

/** Every secret the run handed out (tokens, codes, states, PKCE verifiers, client secrets): none may be recorded. */
const handedOut = new Set<string>()

/** Every span and every log line of the edge's runtime, as they would be exported. */
const { spans, text: spansText, tracer } = capturingTracer()
const logs = capturingLogger()

/** The MCP servers' URLs the authorization servers issue tokens for. */
const resources = () => [mcpUrl, `${mcpBase}/b/mcp`, `${mcpBase}/closed/mcp`]

const makeProvider = (
  name: string,
  url: string,
  registration: boolean,
  clients: Array<Record<string, unknown>> = []
) => {
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
          if (!resources().includes(indicator)) throw new Error(`unknown resource ${indicator}`)
          return { scope: "mcp:tools", audience: indicator, accessTokenFormat: "opaque", accessTokenTTL: tokenTtl }
        }
      }
    },
    ttl: {
      AccessToken: () => tokenTtl,
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
    if (req.url === "/token/revocation" && req.method === "POST") {
      revocations.push(name)
      if (revocationDown) return void res.writeHead(503).end()
    }
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
      authorization_servers: [path === "/closed/mcp" ? closedIssuer : issuer],
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
  received.push({ path, token, valid, method: body?.method })
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

/** Follows redirects as a browser would, until one leaves the authorization servers. */
const browse = (start: string) => browseTo(start, (url) => url.startsWith(issuer) || url.startsWith(closedIssuer))

/** The user consents at the link; the edge's callback answers. */
const consent = async (authorizeUrl: string) => {
  const callback = await browse(authorizeUrl)
  expect(callback.startsWith(`${edge.base}/v1/oauth/callback?`)).toBe(true)
  for (const name of ["code", "state"]) handedOut.add(new URL(callback).searchParams.get(name)!)
  const res = await fetch(callback)
  return { status: res.status, body: await res.json() as any }
}

const add = (a: number, b: number, server = "secure") =>
  edge.call("POST", "/v1/tasks", member, {
    input: { steps: [{ id: "sum", tool: `mcp.${server}.add`, input: { a, b } }] },
    timeout_ms: 20_000
  })

/** Polls a task until it has ended. */
const settled = (taskId: string) => edge.until(taskId, member, ended)

/** The requests an MCP server at `path` got. */
const at = (path: string) => received.filter((r) => r.path === path)

const listen = async (server: HttpServer) => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

beforeAll(async () => {
  edge = await startEdge(makeProbes(), { tracer, logger: logs.logger })
  admin = await edge.sign({ tenant_id: "mcp-oauth", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "mcp-oauth", role: "member", sub: "ana" })

  idp = createServer()
  issuer = await listen(idp)
  const open = makeProvider("open", issuer, true)
  provider = open.provider
  provider.on("grant.success", (ctx: any) => {
    grants.push({ type: ctx.oidc.params.grant_type, resource: ctx.oidc.params.resource })
    // the PKCE verifier the runtime kept between the link and the callback
    if (ctx.oidc.params.code_verifier) handedOut.add(ctx.oidc.params.code_verifier)
  })
  provider.on("registration_create.success", (ctx: any) => {
    clientIds.push(ctx.oidc.entities.Client.clientId)
    handedOut.add(ctx.oidc.entities.Client.clientSecret)
  })
  provider.on("refresh_token.saved", (token: any) => handedOut.add(token.jti))
  idp.on("request", (req, res) => void open.handle(req, res))

  closedIdp = createServer()
  closedIssuer = await listen(closedIdp)
  // a public client registered there beforehand (no secret: PKCE alone binds the code)
  const closed = makeProvider("closed", closedIssuer, false, [{
    client_id: "pre-registered",
    token_endpoint_auth_method: "none",
    redirect_uris: [`${edge.base}/v1/oauth/callback`],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"]
  }])
  closedProvider = closed.provider
  closedProvider.on("grant.success", (ctx: any) => {
    if (ctx.oidc.params.code_verifier) handedOut.add(ctx.oidc.params.code_verifier)
  })
  closedProvider.on("refresh_token.saved", (token: any) => handedOut.add(token.jti))
  closedIdp.on("request", (req, res) => void closed.handle(req, res))

  mcp = createServer((req, res) => {
    const url = req.url ?? ""
    const json = { "content-type": "application/json" }
    // not an MCP endpoint; a redirect (which a POST does not follow); a server whose authorization server has no metadata
    if (url === "/notfound/mcp") return void res.writeHead(404, json).end("{}")
    if (url === "/moved/mcp") return void res.writeHead(307, { location: `${mcpBase}/mcp` }).end()
    if (url === "/nometa/mcp") {
      const metadata = `${mcpBase}/.well-known/oauth-protected-resource/nometa/mcp`
      return void res.writeHead(401, { ...json, "www-authenticate": `Bearer resource_metadata="${metadata}"` }).end(
        "{}"
      )
    }
    if (url === "/.well-known/oauth-protected-resource/nometa/mcp") {
      return void res.writeHead(200, json).end(
        JSON.stringify({ resource: `${mcpBase}/nometa/mcp`, authorization_servers: [`${mcpBase}/no-as`] })
      )
    }
    // a server whose metadata and authorization server are each slow, though each within a request's 15 s
    const slowly = (body: unknown) =>
      void setTimeout(() => void res.writeHead(200, json).end(JSON.stringify(body)), 11_000).unref()
    if (url === "/slow/mcp") {
      const metadata = `${mcpBase}/.well-known/oauth-protected-resource/slow/mcp`
      return void res.writeHead(401, { ...json, "www-authenticate": `Bearer resource_metadata="${metadata}"` }).end(
        "{}"
      )
    }
    if (url === "/.well-known/oauth-protected-resource/slow/mcp") {
      return slowly({ resource: `${mcpBase}/slow/mcp`, authorization_servers: [`${mcpBase}/slow-as`] })
    }
    if (url.startsWith("/.well-known/oauth-authorization-server/slow-as")) return slowly({})
    for (const path of ["/mcp", "/b/mcp", "/closed/mcp"]) {
      if (url === path || url === `/.well-known/oauth-protected-resource${path}`) {
        return void serveMcp(req, res, path, () => (path === "/closed/mcp" ? closedProvider : provider))
      }
    }
    res.writeHead(404, json).end("{}")
  })
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

  it("refreshes once, naming the resource, when the server refuses a token its authorization server dropped", async () => {
    // the token the runtime holds is minutes from expiry: only the server's 401 makes it refresh
    const live = await provider.AccessToken.find(received.at(-1)!.token)
    await live.destroy()
    grants.length = 0
    received.length = 0
    // the next token lives shortly, for the expiry below
    tokenTtl = shortTtl
    try {
      const again = await add(4, 4)
      expect(again.body.status, again.text).toBe("succeeded")
      expect(again.body.output).toEqual({ sum: 8 })
    } finally {
      tokenTtl = 30
    }
    expect(grants).toEqual([{ type: "refresh_token", resource: mcpUrl }])
    expect(received.some((r) => !r.valid)).toBe(true)
    expect(received.filter((r) => r.method === "tools/call" && r.valid)).toHaveLength(1)
  })

  it("refreshes an expired token once for concurrent calls, naming the resource", async () => {
    // the short-lived token of the last refresh is past its time, here and at the authorization server
    await sleep(shortTtl * 1000 + 300)
    grants.length = 0
    received.length = 0
    const tasks = await Promise.all([add(1, 1), add(2, 2), add(3, 3)])
    for (const t of tasks) expect(t.body.status, t.text).toBe("succeeded")
    expect(grants).toEqual([{ type: "refresh_token", resource: mcpUrl }])
    expect(received.every((r) => r.valid)).toBe(true)
  })

  it("waits for consent again when the grant is lost, and goes on once the user gives it", async () => {
    received.length = 0
    expect((await add(1, 2)).body.status).toBe("succeeded")
    // the user revokes the grant at the authorization server: its tokens all go
    const found = await provider.AccessToken.find(received.at(-1)!.token)
    await (await provider.Grant.find(found.grantId)).destroy()
    await provider.RefreshToken.adapter.revokeByGrantId(found.grantId)
    await found.destroy()

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
    const task = await settled(waiting.body.task_id)
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
    expect(revocations).toEqual(["open", "open"])
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
    // the public client's grant is revoked too (its client_id alone authenticates it)
    const token = at("/closed/mcp").filter((r) => r.valid).at(-1)!.token
    revocations.length = 0
    expect((await edge.call("DELETE", "/v1/mcp/servers/closed", admin)).status).toBe(204)
    expect(revocations).toEqual(["closed", "closed"])
    expect(await closedProvider.AccessToken.find(token)).toBeUndefined()
    // discovery goes through the egress guard: a host neither the operator nor the tenant allows is not asked
    const denied = await edge.call("PUT", "/v1/mcp/servers/far", admin, {
      url: "http://127.0.0.2:8080/mcp",
      auth: "oauth2"
    })
    expect(denied.status, denied.text).toBe(400)
    expect(denied.body.error).toMatchObject({ code: "egress_denied", details: { field: "url" } })
    expect(denied.body.error.message).toContain("egress_allowlist")
  })
  it("never sends a connection's token to a server it is not for", async () => {
    const b = `${mcpBase}/b/mcp`
    // an oauth2 connection for something else (no resource): its token is not the server's
    expect(
      (await edge.call("PUT", "/v1/connections/github", admin, {
        type: "oauth2",
        client_id: "gh-app",
        authorize_url: `${issuer}/auth`,
        token_url: `${issuer}/token`
      })).status
    ).toBe(200)
    received.length = 0
    const named = await edge.call("PUT", "/v1/mcp/servers/gh", admin, {
      url: mcpUrl,
      auth: "oauth2",
      connection: "github"
    })
    expect(named.status, named.text).toBe(400)
    expect(named.body.error).toMatchObject({ code: "invalid_mcp_server", details: { field: "connection" } })
    expect(named.body.error.message).toContain("no RFC 8707 resource")
    expect(received).toEqual([])
    expect((await edge.call("DELETE", "/v1/connections/github", admin)).status).toBe(204)

    // a connection the admin named, made for A: moving the server to B is refused, B never asked
    const put = await edge.call("PUT", "/v1/mcp/servers/moving", admin, {
      url: mcpUrl,
      auth: "oauth2",
      connection: "mine"
    })
    expect(put.status, put.text).toBe(200)
    expect((await consent(put.body.authorize_url)).status).toBe(200)
    received.length = 0
    expect((await add(1, 1, "moving")).body.status).toBe("succeeded")
    const tokenA = received.at(-1)!.token
    const moved = await edge.call("PUT", "/v1/mcp/servers/moving", admin, {
      url: b,
      auth: "oauth2",
      connection: "mine"
    })
    expect(moved.status, moved.text).toBe(400)
    expect(moved.body.error).toMatchObject({ code: "invalid_mcp_server", details: { field: "connection" } })
    expect(moved.body.error.message).toContain(`not for ${b}`)
    expect(at("/b/mcp")).toEqual([])

    // the integrator checks too, whatever the edge let through: a connection whose resource is not the server's URL
    const setResource = (resource: string) =>
      edge.run(Effect.gen(function*() {
        const store = yield* ConnectionStore
        const tenant = "mcp-oauth" as any
        const found = yield* store.get(tenant, "mine")
        if (found._tag === "None" || found.value.type !== "oauth2") throw new Error("no oauth2 connection mine")
        yield* store.put(tenant, "mine", { ...found.value, resource })
      }))
    await setResource(b)
    try {
      received.length = 0
      const refused = await add(2, 2, "moving")
      expect(refused.body.status, refused.text).toBe("failed")
      expect(refused.body.steps[0].error.message).toContain(`not for the MCP server moving at ${mcpUrl}`)
      const refresh = await edge.call("POST", "/v1/mcp/servers/moving/refresh", admin)
      expect(refresh.status, refresh.text).toBe(400)
      expect(refresh.body.error.code).toBe("invalid_mcp_server")
      expect(received).toEqual([])
    } finally {
      await setResource(mcpUrl)
    }
    expect((await add(3, 3, "moving")).body.status).toBe("succeeded")

    // the server's own connection, made for A: moving the server sets it up again for B (A's grant revoked)
    const own = await edge.call("PUT", "/v1/mcp/servers/own", admin, { url: mcpUrl, auth: "oauth2" })
    expect((await consent(own.body.authorize_url)).status).toBe(200)
    received.length = 0
    expect((await add(4, 4, "own")).body.status).toBe("succeeded")
    const ownA = received.at(-1)!.token
    revocations.length = 0
    received.length = 0
    const reput = await edge.call("PUT", "/v1/mcp/servers/own", admin, { url: b, auth: "oauth2" })
    expect(reput.status, reput.text).toBe(200)
    expect(reput.body).toMatchObject({ status: "needs_authorization", url: b })
    expect(new URL(reput.body.authorize_url).searchParams.get("resource")).toBe(b)
    expect(revocations).toEqual(["open", "open"])
    expect(await provider.AccessToken.find(ownA)).toBeUndefined()
    // B was asked only without a token (the set-up's probe)
    expect(at("/b/mcp").length).toBeGreaterThan(0)
    expect(at("/b/mcp").every((r) => r.token === "")).toBe(true)
    expect(received.some((r) => r.token === ownA || r.token === tokenA)).toBe(false)
    expect((await consent(reput.body.authorize_url)).status).toBe(200)
    received.length = 0
    expect((await add(5, 5, "own")).body.status).toBe("succeeded")
    expect(received.every((r) => r.path === "/b/mcp" && r.valid)).toBe(true)
  })

  it("removes or moves a server, and removes a connection, when the authorization server cannot revoke", async () => {
    revocationDown = true
    try {
      // "own" holds B's grant: moved back to A, its old grant cannot be revoked; its tokens are forgotten all the same
      revocations.length = 0
      const moved = await edge.call("PUT", "/v1/mcp/servers/own", admin, { url: mcpUrl, auth: "oauth2" })
      expect(moved.status, moved.text).toBe(200)
      expect(moved.body.status).toBe("needs_authorization")
      expect(revocations.length).toBeGreaterThan(0)
      expect((await consent(moved.body.authorize_url)).status).toBe(200)
      received.length = 0
      expect((await add(6, 6, "own")).body.status).toBe("succeeded")
      expect(received.every((r) => r.path === "/mcp")).toBe(true)
      // removed while its authorization server is down
      const removed = await edge.call("DELETE", "/v1/mcp/servers/own", admin)
      expect(removed.status, removed.text).toBe(204)
      // and a connection removed directly (DELETE /v1/connections/{provider} is best effort too)
      const disconnected = await edge.call("DELETE", "/v1/connections/mine", admin)
      expect(disconnected.status, disconnected.text).toBe(204)
    } finally {
      revocationDown = false
    }
    const providers = (await edge.call("GET", "/v1/connections", admin)).body.map((c: any) => c.provider)
    expect(providers).not.toContain("mcp-own")
    expect(providers).not.toContain("mine")
    expect(logs.text()).toContain("tokens deleted without revocation at the provider")
    expect((await edge.call("DELETE", "/v1/mcp/servers/moving", admin)).status).toBe(204)
  })

  it("waits for a connection when an oauth2 server's connection is deleted, and sets it up again on refresh", async () => {
    const put = await edge.call("PUT", "/v1/mcp/servers/lone", admin, { url: mcpUrl, auth: "oauth2" })
    expect((await consent(put.body.authorize_url)).status).toBe(200)
    expect((await add(1, 2, "lone")).body.status).toBe("succeeded")
    expect((await edge.call("DELETE", "/v1/connections/mcp-lone", admin)).status).toBe(204)

    received.length = 0
    const waiting = await add(2, 3, "lone")
    expect(waiting.status, waiting.text).toBe(202)
    expect(waiting.body.steps[0]).toMatchObject({
      status: "waiting_connection",
      connection: { provider: "mcp-lone", reason: "missing" }
    })
    expect(received).toEqual([])
    // refresh: the connection is set up again, and the server waits for consent with a new link
    const registered = clientIds.length
    const refresh = await edge.call("POST", "/v1/mcp/servers/lone/refresh", admin)
    expect(refresh.status, refresh.text).toBe(200)
    expect(refresh.body.status).toBe("needs_authorization")
    expect(clientIds).toHaveLength(registered + 1)
    // nothing but the set-up's probe went to the server, and that without a token
    expect(received.every((r) => r.token === "" && r.method === "initialize")).toBe(true)
    expect((await consent(refresh.body.authorize_url)).status).toBe(200)
    const task = await settled(waiting.body.task_id)
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(task.output).toEqual({ sum: 5 })
    expect((await edge.call("DELETE", "/v1/mcp/servers/lone", admin)).status).toBe(204)
  })

  it("says what a server answered when it is not an OAuth-protected MCP server, or its authorization server is not", async () => {
    const put = (path: string) =>
      edge.call("PUT", "/v1/mcp/servers/odd", admin, { url: `${mcpBase}${path}`, auth: "oauth2" })
    const notFound = await put("/notfound/mcp")
    expect(notFound.status, notFound.text).toBe(400)
    expect(notFound.body.error.code).toBe("invalid_mcp_server")
    expect(notFound.body.error.message).toContain("HTTP 404")
    expect(notFound.body.error.message).not.toContain("not OAuth-protected")
    const moved = await put("/moved/mcp")
    expect(moved.status, moved.text).toBe(400)
    expect(moved.body.error.message).toContain(`redirect (HTTP 307 to ${mcpUrl})`)
    const noMetadata = await put("/nometa/mcp")
    expect(noMetadata.status, noMetadata.text).toBe(400)
    expect(noMetadata.body.error.code).toBe("invalid_mcp_server")
    expect(noMetadata.body.error.message).toContain(`the authorization server ${mcpBase}/no-as publishes no metadata`)
    expect(noMetadata.body.error.message).toContain(`${mcpBase}/.well-known/oauth-authorization-server/no-as`)
    expect((await edge.call("GET", "/v1/mcp/servers", admin)).body).toEqual([])
  })

  it("ends a slow set-up at its deadline, before the edge stops waiting, having changed nothing", async () => {
    const started = Date.now()
    const put = await edge.call("PUT", "/v1/mcp/servers/slow", admin, { url: `${mcpBase}/slow/mcp`, auth: "oauth2" })
    // the set-up's answer (502), not the edge's 503 while the actor went on
    expect(put.status, put.text).toBe(502)
    expect(put.body.error.message).toContain("did not finish within 20s")
    expect(Date.now() - started).toBeLessThan(30_000)
    const providers = (await edge.call("GET", "/v1/connections", admin)).body.map((c: any) => c.provider)
    expect(providers).not.toContain("mcp-slow")
    expect((await edge.call("GET", "/v1/mcp/servers", admin)).body).toEqual([])
  }, 40_000)

  it("keeps the registered client's secret, the codes, states, PKCE verifiers and tokens out of every span, log line and audit record", () => {
    // the tracer saw discovery, registration, the exchange and the refreshes: its silence is not an accident
    const names = new Set(spans.map((s) => s.name))
    for (const name of ["Connection.setUpMcpAuthorization", "McpAuthorization.setUp", "OAuth.requestTokens"]) {
      expect(names.has(name), name).toBe(true)
    }
    expect(handedOut.size).toBeGreaterThan(8)
    expect(logs.lines.length).toBeGreaterThan(0)
    const recorded = [spansText(), logs.text(), JSON.stringify(edge.audit())]
    for (const secret of handedOut) {
      expect(recorded.some((r) => r.includes(secret)), "a span, log line or audit record holds a secret").toBe(false)
    }
  })
})
