import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import Provider from "oidc-provider"
import { browse as browseTo, capturingLogger, capturingTracer, makeProbes, sleep, startEdge } from "./fixtures.js"

/**
 * OAuth2 connections against a real OAuth2/OIDC server (`oidc-provider`) on loopback: authorization
 * code + PKCE driven over HTTP, tokens used by a tenant tool, expiry and refresh with rotation,
 * revocation, and `invalid_grant` once the grant is gone.
 */
const resource = "https://api.acme.test"
const clientId = "altan-acme"
const clientSecret = "acme-client-secret-4f2a9c"
const accessTokenTtl = 3 // seconds

let edge: Awaited<ReturnType<typeof startEdge>>
let provider: any
let idp: Server
let issuer = ""
let api: Server
let apiBase = ""
let admin = ""
let member = ""
let otherAdmin = ""
/** Token-endpoint grants the provider answered, by grant type. */
const grants: Array<string> = []
/** Requests the protected API received: the bearer token and whether it was valid. */
const apiCalls: Array<{ token: string; valid: boolean }> = []
const revocations: Array<string> = []
/** Refresh tokens the provider issued. */
const refreshTokens: Array<string> = []

/** Every span of the edge's runtime as an exporter would send it. */
const { spans, tracer } = capturingTracer()
/** Every log line of the edge's runtime. */
const logs = capturingLogger()
/** While set, the provider's revocation endpoint fails (503), as a provider that is down. */
let revocationDown = false

const call = (method: string, path: string, body?: unknown, token = admin) => edge.call(method, path, token, body)

/** Follows redirects as a browser would, until one leaves the provider. */
const browse = (start: string) => browseTo(start, (url) => url.startsWith(issuer))

/** Connects the tenant's acme account: authorize, consent at the provider, callback. */
const connect = async () => {
  const authorize = await call("POST", "/v1/connections/acme/authorize")
  expect(authorize.status, authorize.text).toBe(200)
  const callback = await browse(authorize.body.authorize_url)
  expect(callback.startsWith(`${edge.base}/v1/oauth/callback?`)).toBe(true)
  const res = await fetch(callback)
  return { status: res.status, body: await res.json() as any, callback }
}

const runTool = (token = member) =>
  call("POST", "/v1/tasks", {
    input: { steps: [{ id: "note", tool: "acme_note", input: { text: "hello" } }] },
    timeout_ms: 20_000
  }, token)

/** Polls the task until `done` says so (at most ~10 s). */
const until = async (taskId: string, done: (task: any) => boolean, token = member) => {
  for (let i = 0; i < 100; i++) {
    const task = (await call("GET", `/v1/tasks/${taskId}`, undefined, token)).body
    if (done(task)) return task
    await sleep(100)
  }
  throw new Error(`task ${taskId} did not get there`)
}

/** A task waiting for the acme connection, as answered: its wait checked, then cancelled (no later connect wakes it). */
const expectWaiting = async (task: { status: number; body: any }, reason: "missing" | "needs_reauth") => {
  expect(task.status, JSON.stringify(task.body)).toBe(202)
  expect(task.body.status).toBe("waiting")
  expect(task.body.steps[0]).toMatchObject({
    status: "waiting_connection",
    connection: { provider: "acme", reason }
  })
  expect(task.body.waiting_for).toEqual([expect.objectContaining({ kind: "connection", provider: "acme", reason })])
  return task.body
}

beforeAll(async () => {
  // 50 tool calls at once from one tenant: above the edge's default of 32 concurrent tasks
  edge = await startEdge(makeProbes(), { admission: { maxConcurrentTasks: 100 }, tracer, logger: logs.logger })
  admin = await edge.sign({ tenant_id: "tenant-oauth", role: "admin" })
  member = await edge.sign({ tenant_id: "tenant-oauth", role: "member" })
  otherAdmin = await edge.sign({ tenant_id: "tenant-other", role: "admin" })

  idp = createServer()
  await new Promise<void>((r) => idp.listen(0, "127.0.0.1", r))
  issuer = `http://127.0.0.1:${(idp.address() as { port: number }).port}`
  provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [`${edge.base}/v1/oauth/callback`],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post"
    }],
    // notes:write is the resource server's scope (below), not an OpenID one
    scopes: ["openid", "offline_access"],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async () => true,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: "notes:write",
          accessTokenFormat: "opaque",
          accessTokenTTL: accessTokenTtl
        })
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
  provider.on("grant.success", (ctx: any) => grants.push(ctx.oidc.params.grant_type))
  provider.on("refresh_token.saved", (token: any) => refreshTokens.push(token.jti))
  const callback = provider.callback()
  // the user's consent, given at once: login as user-1 and grant what was asked
  idp.on("request", async (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith("/interaction/")) {
      const details = await provider.interactionDetails(req, res)
      const grant = new provider.Grant({ accountId: "user-1", clientId: details.params.client_id })
      if (details.params.scope) {
        grant.addOIDCScope(
          String(details.params.scope).split(" ").filter((s: string) => s === "openid" || s === "offline_access").join(
            " "
          )
        )
      }
      grant.addResourceScope(resource, "notes:write")
      const grantId = await grant.save()
      return provider.interactionFinished(req, res, { login: { accountId: "user-1" }, consent: { grantId } }, {
        mergeWithLastSubmission: false
      })
    }
    if (req.url === "/token/revocation" && req.method === "POST") {
      revocations.push(req.url)
      if (revocationDown) return void res.writeHead(503).end()
    }
    callback(req, res)
  })

  // the protected API the tenant's tool calls: it accepts only live access tokens of this provider
  api = createServer(async (req, res) => {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "")
    const found = await provider.AccessToken.find(token)
    const valid = found !== undefined && !found.isExpired
    apiCalls.push({ token, valid })
    res.writeHead(valid ? 200 : 401, { "content-type": "application/json" })
    res.end(JSON.stringify(valid ? { ok: true, sub: found.accountId } : { error: "invalid_token" }))
  })
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r))
  apiBase = `http://127.0.0.1:${(api.address() as { port: number }).port}`

  expect((await call("PUT", "/v1/secrets/acme_client_secret", { value: clientSecret })).status).toBe(204)
  expect(
    (await call("PUT", "/v1/tools/acme_note", {
      tool_id: "acme_note",
      name: "Write an Acme note",
      parameters: [{ name: "text", type: "string" }],
      endpoint: `${apiBase}/notes`,
      method: "POST",
      auth: "oauth2",
      provider: "acme"
    })).status
  ).toBe(200)
})

afterAll(async () => {
  await edge.close()
  idp.closeAllConnections()
  api.closeAllConnections()
  await new Promise((r) => idp.close(r))
  await new Promise((r) => api.close(r))
})

const app = () => ({
  type: "oauth2",
  client_id: clientId,
  client_secret_secret: "acme_client_secret",
  authorize_url: `${issuer}/auth`,
  token_url: `${issuer}/token`,
  revoke_url: `${issuer}/token/revocation`,
  scopes: ["openid", "offline_access", "notes:write"]
})

describe("OAuth2 connections", () => {
  it("connects through authorization code + PKCE and uses the token in a tool call", async () => {
    const put = await call("PUT", "/v1/connections/acme", app())
    expect(put.status, put.text).toBe(200)
    expect(put.body).toMatchObject({ provider: "acme", type: "oauth2", status: "pending" })

    const authorize = await call("POST", "/v1/connections/acme/authorize")
    const url = new URL(authorize.body.authorize_url)
    expect(url.origin + url.pathname).toBe(`${issuer}/auth`)
    expect(url.searchParams.get("code_challenge_method")).toBe("S256")
    expect(url.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(url.searchParams.get("client_id")).toBe(clientId)
    expect(url.searchParams.get("scope")).toBe("openid offline_access notes:write")

    const connected = await connect()
    expect(connected.status, JSON.stringify(connected.body)).toBe(200)
    expect(connected.body).toMatchObject({ provider: "acme", type: "oauth2", status: "connected" })
    expect(grants.filter((g) => g === "authorization_code")).toHaveLength(1)

    // the state was single-use: replaying the callback is refused and exchanges nothing
    const replay = await fetch(connected.callback)
    expect(replay.status).toBe(400)
    expect((await replay.json() as any).error.code).toBe("invalid_state")
    expect(grants.filter((g) => g === "authorization_code")).toHaveLength(1)

    const listed = await call("GET", "/v1/connections")
    expect(listed.body).toEqual([expect.objectContaining({ provider: "acme", status: "connected" })])
    expect(listed.body[0].expires_at).not.toBeNull()
    expect(listed.text).not.toContain(clientSecret)

    apiCalls.length = 0
    const task = await runTool()
    expect(task.body.status, JSON.stringify(task.body)).toBe("succeeded")
    expect(task.body.output).toEqual({ ok: true, sub: "user-1" })
    expect(apiCalls).toHaveLength(1)
    expect(apiCalls[0]!.valid).toBe(true)
    // no token anywhere in what the API shows
    expect(JSON.stringify(task.body)).not.toContain(apiCalls[0]!.token)
    expect((await call("GET", "/v1/connections")).text).not.toContain(apiCalls[0]!.token)
  })

  it("refuses an unknown or tampered state, and a denied consent", async () => {
    const bad = await fetch(`${edge.base}/v1/oauth/callback?state=forged&code=whatever`)
    expect(bad.status).toBe(400)
    expect((await bad.json() as any).error.code).toBe("invalid_state")

    const authorize = await call("POST", "/v1/connections/acme/authorize")
    const state = new URL(authorize.body.authorize_url).searchParams.get("state")!
    const denied = await fetch(`${edge.base}/v1/oauth/callback?state=${state}&error=access_denied`)
    expect(denied.status).toBe(400)
    expect((await denied.json() as any).error.code).toBe("authorization_denied")
  })

  it("refreshes an expired token exactly once for 50 concurrent calls, keeping the rotated refresh token", async () => {
    await sleep(accessTokenTtl * 1000 + 300)
    grants.length = 0
    apiCalls.length = 0
    const tasks = await Promise.all(Array.from({ length: 50 }, () => runTool()))
    for (const t of tasks) expect(t.body.status, JSON.stringify(t.body)).toBe("succeeded")
    expect(grants).toEqual(["refresh_token"])
    expect(new Set(apiCalls.map((c) => c.token)).size).toBe(1)
    expect(apiCalls.every((c) => c.valid)).toBe(true)

    // a second expiry: the refresh uses the rotated refresh token (reusing the old one would revoke the grant)
    await sleep(accessTokenTtl * 1000 + 300)
    const again = await runTool()
    expect(again.body.status, JSON.stringify(again.body)).toBe("succeeded")
    expect(grants).toEqual(["refresh_token", "refresh_token"])
  })

  it("keeps tenants apart: another tenant cannot authorize, list, use or delete the connection", async () => {
    expect((await call("POST", "/v1/connections/acme/authorize", undefined, otherAdmin)).status).toBe(404)
    expect((await call("GET", "/v1/connections", undefined, otherAdmin)).body).toEqual([])
    expect((await call("DELETE", "/v1/connections/acme", undefined, otherAdmin)).status).toBe(404)
    expect((await call("POST", "/v1/connections/acme/authorize", undefined, member)).status).toBe(403)
    const otherMember = await edge.sign({ tenant_id: "tenant-other", role: "member" })
    const task = await runTool(otherMember)
    expect(task.status).toBe(400)
    expect(task.body.error.code).toBe("unknown_tool")
  })

  it("refreshes once and retries when the API rejects a token that has not expired yet", async () => {
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    const live = await provider.AccessToken.find(apiCalls[0]!.token)
    await live.destroy()
    grants.length = 0
    apiCalls.length = 0
    const task = await runTool()
    expect(task.body.status, JSON.stringify(task.body)).toBe("succeeded")
    expect(grants).toEqual(["refresh_token"])
    expect(apiCalls.map((c) => c.valid)).toEqual([false, true])
  })

  it("revokes at the provider on delete, after which the token is dead", async () => {
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    const token = apiCalls[0]!.token
    revocations.length = 0
    const removed = await call("DELETE", "/v1/connections/acme")
    expect(removed.status, removed.text).toBe(204)
    // RFC 7009, once for the refresh token and once for the access token
    expect(revocations).toHaveLength(2)
    expect(await provider.AccessToken.find(token)).toBeUndefined()
    expect((await call("GET", "/v1/connections")).body).toEqual([])
    // no connection, no OAuth app to consent with: the call waits for one, with no link to follow
    const task = await expectWaiting(await runTool(), "missing")
    expect(task.waiting_for[0].authorize_url).toBeUndefined()
    expect((await call("POST", `/v1/tasks/${task.task_id}/cancel`, undefined, member)).status).toBe(200)
  })

  it("on invalid_grant the connection needs_reauth: its calls wait, and the user's consent resumes them all", async () => {
    expect((await call("PUT", "/v1/connections/acme", app())).status).toBe(200)
    expect((await connect()).body.status).toBe("connected")
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    // the user revokes the app at the provider: the grant and all its tokens are gone
    const found = await provider.AccessToken.find(apiCalls[0]!.token)
    const grant = await provider.Grant.find(found.grantId)
    await grant.destroy()
    await provider.RefreshToken.adapter.revokeByGrantId(found.grantId)
    await sleep(accessTokenTtl * 1000 + 300)

    const calls = await Promise.all(Array.from({ length: 5 }, () => runTool()))
    // each call waits for the user to consent again, with a link of its own to do so
    const waiting = []
    for (const task of calls) waiting.push(await expectWaiting(task, "needs_reauth"))
    const links = waiting.map((t) => t.waiting_for[0].authorize_url as string)
    expect(new Set(links).size).toBe(5)
    for (const link of links) {
      expect(link.startsWith(`${issuer}/auth?`)).toBe(true)
      expect(new URL(link).searchParams.get("redirect_uri")).toBe(`${edge.base}/v1/oauth/callback`)
    }
    const listed = await call("GET", "/v1/connections")
    expect(listed.body).toEqual([expect.objectContaining({ provider: "acme", status: "needs_reauth" })])
    // the user follows one task's link: the callback stores the new tokens, and every waiting task goes on by itself
    apiCalls.length = 0
    const callback = await browse(links[2]!)
    const completed = await fetch(callback)
    expect(completed.status, await completed.text()).toBe(200)
    for (const task of waiting) {
      const done = await until(task.task_id, (t) => ["succeeded", "failed", "cancelled"].includes(t.status))
      expect(done.status, JSON.stringify(done)).toBe("succeeded")
      expect(done.output).toEqual({ ok: true, sub: "user-1" })
      // the wait is on the step's record, and it ran with a new attempt
      expect(done.steps[0]).toMatchObject({ status: "succeeded", connection: { reason: "needs_reauth" }, attempts: 2 })
      expect(done.waiting_for).toBeUndefined()
    }
    expect(apiCalls).toHaveLength(5)
    expect(apiCalls.every((c) => c.valid)).toBe(true)
    // the stream said what the task waited for, and where to consent (it ends with the task)
    const events = await call("GET", `/v1/tasks/${waiting[0].task_id}/events`, undefined, member)
    const required = events.text.split("\n\n").filter((b) => b.includes("event: connection.required"))
    expect(required).toHaveLength(1)
    expect(events.text.indexOf("event: connection.required")).toBeLessThan(events.text.indexOf("event: tool.completed"))
    expect(JSON.parse(required[0]!.slice(required[0]!.indexOf("data: ") + 6)).data).toMatchObject({
      step_id: "note",
      tool: "acme_note",
      provider: "acme",
      reason: "needs_reauth",
      authorize_url: links[0]
    })
    expect(events.text).toContain("event: task.succeeded")
    // the link's state was single-use
    expect((await fetch(callback)).status).toBe(400)
    expect((await runTool()).body.status).toBe("succeeded")
  })

  it("revokes the old grant when the connection is replaced by another app", async () => {
    expect((await connect()).body.status).toBe("connected")
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    const token = apiCalls[0]!.token
    revocations.length = 0
    const replaced = await call("PUT", "/v1/connections/acme", { ...app(), client_id: "another-app" })
    expect(replaced.status, replaced.text).toBe(200)
    expect(replaced.body).toMatchObject({ status: "pending" })
    expect(revocations).toHaveLength(2)
    expect(await provider.AccessToken.find(token)).toBeUndefined()
    // nothing of the old grant is used any more: the call waits for the new app's consent, with its link
    const task = await expectWaiting(await runTool(), "missing")
    const link = new URL(task.waiting_for[0].authorize_url)
    expect(link.searchParams.get("client_id")).toBe("another-app")
    expect(link.searchParams.get("code_challenge_method")).toBe("S256")
    expect(apiCalls.filter((c) => c.token === token)).toHaveLength(1)
    expect((await call("POST", `/v1/tasks/${task.task_id}/cancel`, undefined, member)).status).toBe(200)
  })

  it("fails a refresh at once, without retries, when the app's client secret is gone", async () => {
    expect((await call("PUT", "/v1/connections/acme", app())).status).toBe(200)
    expect((await connect()).body.status).toBe("connected")
    expect((await call("DELETE", "/v1/secrets/acme_client_secret")).status).toBe(204)
    try {
      await sleep(accessTokenTtl * 1000 + 300)
      grants.length = 0
      const task = await runTool()
      expect(task.body.status).toBe("failed")
      expect(task.body.steps[0]).toMatchObject({ attempts: 1, error: { code: "tool_failed" } })
      expect(task.body.steps[0].error.message).toContain("client secret")
      expect(grants).toEqual([])
    } finally {
      expect((await call("PUT", "/v1/secrets/acme_client_secret", { value: clientSecret })).status).toBe(204)
    }
    expect((await runTool()).body.status).toBe("succeeded")
  })

  it("removes a connection whose provider cannot revoke: the tokens are forgotten, a warning logged", async () => {
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    const token = apiCalls[0]!.token
    revocations.length = 0
    revocationDown = true
    try {
      const removed = await call("DELETE", "/v1/connections/acme")
      expect(removed.status, removed.text).toBe(204)
    } finally {
      revocationDown = false
    }
    // it was asked (and failed): best effort, the removal went on
    expect(revocations.length).toBeGreaterThan(0)
    expect(await provider.AccessToken.find(token)).toBeDefined()
    expect((await call("GET", "/v1/connections")).body).toEqual([])
    expect(logs.text()).toContain("acme tokens deleted without revocation at the provider")
    expect(logs.text()).not.toContain(token)
    // nothing of the old grant is used: the call waits for a connection
    const task = await expectWaiting(await runTool(), "missing")
    expect(apiCalls).toHaveLength(1)
    expect((await call("POST", `/v1/tasks/${task.task_id}/cancel`, undefined, member)).status).toBe(200)
  })

  it("keeps the callback's code and state, the grant's tokens and the client secret out of every span", async () => {
    spans.length = 0
    expect((await call("PUT", "/v1/connections/acme", app())).status).toBe(200)
    const connected = await connect()
    expect(connected.body.status).toBe("connected")
    const query = new URL(connected.callback).searchParams
    const [code, state] = [query.get("code")!, query.get("state")!]
    apiCalls.length = 0
    expect((await runTool()).body.status).toBe("succeeded")
    // past the access token's lifetime the next call refreshes it (a rotated refresh token comes back)
    await sleep(accessTokenTtl * 1000 + 300)
    expect((await runTool()).body.status).toBe("succeeded")
    const accessTokens = [...new Set(apiCalls.map((c) => c.token))]
    expect(accessTokens).toHaveLength(2)
    expect(await provider.RefreshToken.find(refreshTokens.at(-1))).toBeDefined()
    // a forged callback, refused
    expect((await fetch(`${edge.base}/v1/oauth/callback?state=state-4b1d&code=code-9f3e`)).status).toBe(400)

    // the tracer saw the exchange, the refresh and the calls, so its silence about the secrets is not an accident
    const grantTypes = spans.filter((s) => s.name === "OAuth.requestTokens").map((s) =>
      s.attributes.get("altan.oauth.grant_type")
    )
    expect(grantTypes).toEqual(["authorization_code", "refresh_token"])
    expect(spans.some((s) => [...s.attributes.values()].some((v) => String(v).includes("/v1/tasks")))).toBe(true)
    expect(spans.filter((s) => s.name === "Egress.request").length).toBeGreaterThanOrEqual(4)
    const all = JSON.stringify(spans.map((s) => [s.name, [...s.attributes.entries()], s.events, s.end]))
    const secrets = [code, state, "code-9f3e", "state-4b1d", clientSecret, ...accessTokens, ...refreshTokens]
    for (const secret of [...secrets, admin, member, admin.split(".")[2]!]) {
      expect(all.includes(secret), "a span holds a secret").toBe(false)
      expect(logs.text().includes(secret), "a log line holds a secret").toBe(false)
    }
  })
})
