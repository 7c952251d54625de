import * as OAuth from "@altan/integrator/OAuth"
import * as Egress from "@altan/tool/Egress"
import { EgressConfig } from "@altan/tool/EgressConfig"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { createServer, type Server } from "node:http"

/**
 * The token endpoint client against a loopback server answering what providers really answer,
 * through the real egress guard: rotation or not, invalid_grant, garbage, client authentication.
 */
let server: Server
let base = ""
let reply: { status: number; body: string } = { status: 200, body: "{}" }
const received: Array<{ authorization: string | undefined; form: URLSearchParams }> = []

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = ""
    req.on("data", (c) => (body += c)).on("end", () => {
      received.push({ authorization: req.headers.authorization, form: new URLSearchParams(body) })
      res.writeHead(reply.status, { "content-type": "application/json" }).end(reply.body)
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
})
afterAll(() => new Promise<void>((r) => server.close(() => r())))

const egress = Egress.layer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: ["127.0.0.1"] })))
const app = (client_auth: "post" | "basic" = "post") => ({
  type: "oauth2" as const,
  client_id: "my app",
  client_secret_secret: "s",
  authorize_url: `${base}/authorize`,
  token_url: `${base}/token`,
  revoke_url: `${base}/revoke`,
  scopes: [],
  client_auth
})
const secret = Redacted.make("s3cr:et")
const previous: OAuth.Tokens = {
  access_token: "old-access",
  refresh_token: "old-refresh",
  token_type: "Bearer",
  expires_at: Date.now(),
  issued_at: Date.now() - 3_600_000,
  scopes: ["chat:write"]
}
const refresh = (config = app()) =>
  OAuth.requestTokens(config, secret, { grant_type: "refresh_token", refresh_token: "old-refresh" }, previous).pipe(
    Effect.provide(egress)
  )

describe("OAuth2 token endpoint client", () => {
  it.effect("keeps the old refresh token when the answer carries none, and takes a rotated one", () =>
    Effect.gen(function*() {
      reply = {
        status: 200,
        body: JSON.stringify({ access_token: "new-access", token_type: "bearer", expires_in: 3600 })
      }
      const kept = yield* refresh()
      expect(kept).toMatchObject({ access_token: "new-access", refresh_token: "old-refresh", scopes: ["chat:write"] })
      expect(kept.expires_at! - kept.issued_at).toBe(3_600_000)
      reply = {
        status: 200,
        body: JSON.stringify({ access_token: "a2", refresh_token: "rotated", expires_in: "60", scope: "a b" })
      }
      expect(yield* refresh()).toMatchObject({ refresh_token: "rotated", scopes: ["a", "b"] })
    }))

  it.effect("sends client credentials in the form, or as HTTP Basic with each part form-encoded", () =>
    Effect.gen(function*() {
      reply = { status: 200, body: JSON.stringify({ access_token: "x" }) }
      received.length = 0
      yield* refresh(app("post"))
      expect(received[0]!.authorization).toBeUndefined()
      expect(Object.fromEntries(received[0]!.form)).toEqual({
        grant_type: "refresh_token",
        refresh_token: "old-refresh",
        client_id: "my app",
        client_secret: "s3cr:et"
      })
      yield* refresh(app("basic"))
      expect(received[1]!.authorization).toBe(`Basic ${Buffer.from("my%20app:s3cr%3Aet").toString("base64")}`)
      expect(received[1]!.form.get("client_secret")).toBeNull()
    }))

  it.effect("tells invalid_grant apart from other failures, and refuses garbage", () =>
    Effect.gen(function*() {
      reply = { status: 400, body: JSON.stringify({ error: "invalid_grant", error_description: "revoked" }) }
      expect(yield* Effect.flip(refresh())).toMatchObject({ _tag: "InvalidGrant", description: "revoked" })
      reply = { status: 401, body: JSON.stringify({ error: "invalid_client" }) }
      const client = yield* Effect.flip(refresh())
      expect(client).toMatchObject({ _tag: "UpstreamFailed" })
      expect(client.message).toContain("HTTP 401 (invalid_client)")
      reply = { status: 200, body: "<html>oops</html>" }
      expect((yield* Effect.flip(refresh())).message).toContain("without a usable access_token")
      reply = { status: 200, body: JSON.stringify({ token_type: "bearer" }) }
      expect(yield* Effect.flip(refresh())).toMatchObject({ _tag: "UpstreamFailed" })
      // the client secret never shows in an error
      expect(JSON.stringify(client)).not.toContain("s3cr:et")
    }))

  it.effect("never calls a token endpoint on a private address the operator did not allow", () =>
    Effect.gen(function*() {
      received.length = 0
      const error = yield* Effect.flip(
        OAuth.requestTokens({ ...app(), token_url: "http://169.254.169.254/token" }, secret, {
          grant_type: "authorization_code"
        }).pipe(Effect.provide(egress))
      )
      expect(error).toMatchObject({ _tag: "UpstreamFailed" })
      expect(error.message).toContain("169.254.169.254")
      expect(received).toHaveLength(0)
    }))

  it("asks for the built-in provider's minimum scopes unless the app names its own, with an S256 challenge", () => {
    const verifier = OAuth.randomToken()
    const url = new URL(OAuth.authorizeUrl(app(), OAuth.scopesFor("slack", app()), {
      state: "st",
      redirectUri: "https://altan.example.com/v1/oauth/callback",
      codeVerifier: verifier
    }))
    expect(url.searchParams.get("scope")).toBe("chat:write channels:manage channels:history")
    expect(url.searchParams.get("code_challenge")).toBe(OAuth.challengeOf(verifier))
    expect(url.searchParams.get("code_challenge")).not.toBe(verifier)
    expect(OAuth.scopesFor("slack", { ...app(), scopes: ["chat:write"] })).toEqual(["chat:write"])
    expect(OAuth.scopesFor("unknown-provider", app())).toEqual([])
  })
})
