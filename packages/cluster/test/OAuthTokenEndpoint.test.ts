import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import * as OAuth from "@altan/integrator/OAuth"
import * as Egress from "@altan/tool/Egress"
import { EgressConfig } from "@altan/tool/EgressConfig"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import { createServer, type IncomingMessage, type Server } from "node:http"
import type { AddressInfo } from "node:net"

/** A provider's token and revocation endpoints on loopback: each answer is scripted, each request recorded. */
interface Received {
  readonly path: string
  readonly headers: IncomingMessage["headers"]
  readonly form: Record<string, string>
}
const received: Array<Received> = []
let answers: Array<{ status: number; body?: unknown; headers?: Record<string, string> }> = []
let server: Server
let base = ""

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = ""
    req.on("data", (chunk) => (body += chunk))
    req.on("end", () => {
      received.push({ path: req.url ?? "", headers: req.headers, form: Object.fromEntries(new URLSearchParams(body)) })
      const answer = answers.shift() ?? { status: 200, body: {} }
      res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers })
      res.end(typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body ?? {}))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

const reset = (...next: typeof answers) => {
  received.length = 0
  answers = next
}

/** The real egress guard, with loopback allowed as the operator would for a local provider. */
const egress = Egress.layer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: ["127.0.0.1"] })))

const config = (options: Partial<OAuth2Connection> = {}): OAuth2Connection => ({
  type: "oauth2",
  client_id: "app:id/1",
  client_secret_secret: "app_secret",
  authorize_url: `${base}/authorize`,
  token_url: `${base}/token`,
  revoke_url: `${base}/revoke`,
  scopes: [],
  client_auth: "post",
  ...options
} as OAuth2Connection)
const clientSecret = Redacted.make("s3cret&=+")

const request = (form: Record<string, string>, options: Partial<OAuth2Connection> = {}, previous?: OAuth.Tokens) =>
  OAuth.requestTokens(config(options), clientSecret, form, previous).pipe(Effect.provide(egress), Effect.either)

describe("OAuth token endpoint", () => {
  it.effect("code exchange with client_secret_post: the form carries the grant and the client; the answer becomes tokens", () =>
    Effect.gen(function*() {
      reset({
        status: 200,
        body: { access_token: "at-1", expires_in: "3600", scope: "a b,c", refresh_token: "rt-1", token_type: "bearer" }
      })
      yield* TestClock.setTime(1_000_000)
      const tokens = yield* request({
        grant_type: "authorization_code",
        code: "c0de",
        code_verifier: "v",
        redirect_uri: "https://app/cb"
      })
      expect(tokens).toEqual(Either.right({
        access_token: "at-1",
        refresh_token: "rt-1",
        token_type: "bearer",
        expires_at: 1_000_000 + 3_600_000,
        issued_at: 1_000_000,
        scopes: ["a", "b", "c"]
      }))
      expect(received).toHaveLength(1)
      expect(received[0]!.path).toBe("/token")
      expect(received[0]!.headers["content-type"]).toBe("application/x-www-form-urlencoded")
      expect(received[0]!.headers.authorization).toBeUndefined()
      expect(received[0]!.form).toEqual({
        grant_type: "authorization_code",
        code: "c0de",
        code_verifier: "v",
        redirect_uri: "https://app/cb",
        client_id: "app:id/1",
        client_secret: "s3cret&=+"
      })
    }))

  it.effect("client_secret_basic: each part form-encoded before base64 (RFC 6749 2.3.1), nothing of the client in the form", () =>
    Effect.gen(function*() {
      reset({ status: 200, body: { access_token: "at-2" } })
      yield* request({ grant_type: "refresh_token", refresh_token: "rt" }, { client_auth: "basic" })
      const expected = Buffer.from(`${encodeURIComponent("app:id/1")}:${encodeURIComponent("s3cret&=+")}`).toString(
        "base64"
      )
      expect(received[0]!.headers.authorization).toBe(`Basic ${expected}`)
      expect(received[0]!.form).toEqual({ grant_type: "refresh_token", refresh_token: "rt" })
    }))

  it.effect("a refresh answer without a refresh token or scope keeps the previous ones (RFC 6749 6)", () =>
    Effect.gen(function*() {
      reset({ status: 200, body: { access_token: "at-3", expires_in: 0 } })
      const previous: OAuth.Tokens = {
        access_token: "old",
        refresh_token: "rt-old",
        token_type: "Bearer",
        issued_at: 0,
        scopes: ["x"]
      }
      const tokens = Either.getOrThrow(
        yield* request({ grant_type: "refresh_token", refresh_token: "rt-old" }, {}, previous)
      )
      expect(tokens).toMatchObject({
        access_token: "at-3",
        refresh_token: "rt-old",
        token_type: "Bearer",
        scopes: ["x"]
      })
      // expires_in 0 says nothing usable: no expiry rather than an instant one
      expect(tokens.expires_at).toBeUndefined()
    }))

  it.effect("invalid_grant is told apart, with what was sent masked out of its description", () =>
    Effect.gen(function*() {
      reset({
        status: 400,
        body: { error: "invalid_grant", error_description: "refresh token rt-secret-9 was revoked" }
      })
      const result = yield* request({ grant_type: "refresh_token", refresh_token: "rt-secret-9" })
      expect(Either.isLeft(result) && result.left._tag).toBe("InvalidGrant")
      const description = Either.isLeft(result) && result.left._tag === "InvalidGrant" ? result.left.description : ""
      expect(description).toContain("was revoked")
      expect(description).not.toContain("rt-secret-9")
    }))

  it.effect("other errors, garbage and redirects are UpstreamFailed naming the host and status, and no redirect is followed", () =>
    Effect.gen(function*() {
      reset({ status: 503, body: { error: "temporarily_unavailable" } })
      const unavailable = yield* request({ grant_type: "refresh_token", refresh_token: "r" })
      expect(Either.isLeft(unavailable) && unavailable.left).toMatchObject({
        _tag: "UpstreamFailed",
        message: `the token endpoint of ${base.slice(7)} answered HTTP 503 (temporarily_unavailable)`,
        details: { status: 503 }
      })

      reset({ status: 200, body: "<html>not json</html>" })
      const garbage = yield* request({ grant_type: "refresh_token", refresh_token: "r" })
      expect(Either.isLeft(garbage) && garbage.left.message).toContain("without a usable access_token")

      reset({ status: 200, body: { access_token: "" } })
      expect(Either.isLeft(yield* request({ grant_type: "refresh_token", refresh_token: "r" }))).toBe(true)

      // the form holds the client secret: a redirect is an answer, never a second POST
      reset({ status: 307, headers: { location: `${base}/elsewhere` } })
      const redirected = yield* request({ grant_type: "refresh_token", refresh_token: "r" })
      expect(Either.isLeft(redirected) && redirected.left.message).toContain("answered HTTP 307")
      expect(received.map((r) => r.path)).toEqual(["/token"])
    }))

  it.effect("revocation: ok, unsupported_token_type is nothing to do, other failures are errors, no URL sends nothing", () =>
    Effect.gen(function*() {
      const revoke = (options: Partial<OAuth2Connection> = {}) =>
        OAuth.revokeToken(config(options), clientSecret, "tok", "refresh_token").pipe(
          Effect.provide(egress),
          Effect.either
        )
      reset({ status: 200 }, { status: 400, body: { error: "unsupported_token_type" } }, { status: 503 })
      expect(yield* revoke()).toEqual(Either.right(undefined))
      expect(received[0]!.form).toMatchObject({ token: "tok", token_type_hint: "refresh_token", client_id: "app:id/1" })
      expect(yield* revoke()).toEqual(Either.right(undefined))
      expect(Either.isLeft(yield* revoke())).toBe(true)
      reset()
      expect(yield* revoke({ revoke_url: undefined })).toEqual(Either.right(undefined))
      expect(received).toHaveLength(0)
    }))

  it.effect("a connection an MCP set-up made asks its token and revocation endpoints only where the tenant's allowlist lets it", () =>
    Effect.gen(function*() {
      reset()
      // refused by the guard before any lookup or connection: the host is neither the tenant's nor the operator's
      const far = { token_egress: "tenant_allowlist" as const, token_url: "https://as.example.test/token" }
      const denied = yield* OAuth.requestTokens(
        config(far),
        clientSecret,
        { grant_type: "refresh_token", refresh_token: "r" },
        undefined,
        {
          allowHosts: ["mcp.example.test"]
        }
      ).pipe(Effect.provide(egress), Effect.either)
      expect(Either.isLeft(denied) && denied.left.message).toContain("as.example.test is not in the allowed hosts")
      const revoked = yield* OAuth.revokeToken(
        config({ token_egress: "tenant_allowlist", revoke_url: "https://as.example.test/revoke" }),
        clientSecret,
        "tok",
        "refresh_token",
        { allowHosts: [] }
      ).pipe(Effect.provide(egress), Effect.either)
      expect(Either.isLeft(revoked) && revoked.left.message).toContain("not in the allowed hosts")
      expect(received).toHaveLength(0)
      // the operator's hosts (EGRESS_ALLOW_HOSTS) stay reachable, as for every guarded request
      reset({ status: 200, body: { access_token: "at-2" } })
      const allowed = yield* OAuth.requestTokens(
        config({ token_egress: "tenant_allowlist" }),
        clientSecret,
        {
          grant_type: "refresh_token",
          refresh_token: "r"
        },
        undefined,
        { allowHosts: [] }
      ).pipe(Effect.provide(egress), Effect.either)
      expect(Either.isRight(allowed)).toBe(true)
      expect(received.map((r) => r.path)).toEqual(["/token"])
    }))
})

describe("OAuth authorization URL and staleness", () => {
  it("the PKCE challenge is unpadded base64url of the verifier's SHA-256 (RFC 7636 4.2), in a URL with the app's parameters", async () => {
    const verifier = "dBjftJeZ4CVP-mJ0kzSyZjZaHb0lHJkM6C3bUnKXoLE"
    // computed another way: Web Crypto and a hand-made base64url
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)))
    const challenge = btoa(String.fromCharCode(...digest)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")
    expect(challenge).toHaveLength(43)
    expect(OAuth.challengeOf(verifier)).toBe(challenge)
    const url = new URL(OAuth.authorizeUrl(config(), ["a", "b"], {
      state: "st",
      redirectUri: "https://api/cb",
      codeVerifier: verifier
    }))
    expect(Object.fromEntries(url.searchParams)).toEqual({
      response_type: "code",
      client_id: "app:id/1",
      redirect_uri: "https://api/cb",
      scope: "a b",
      state: "st",
      code_challenge: challenge,
      code_challenge_method: "S256"
    })
    expect(OAuth.scopesFor("slack", config())).toEqual(OAuth.minimumScopes.slack)
    expect(OAuth.scopesFor("slack", config({ scopes: ["only"] }))).toEqual(["only"])
  })

  it("a token is refreshed within a minute of expiry, or within a quarter of a short life", () => {
    const hour: OAuth.Tokens = {
      access_token: "a",
      token_type: "Bearer",
      issued_at: 0,
      expires_at: 3_600_000,
      scopes: []
    }
    expect(OAuth.isStale(hour, 3_540_000 - 1)).toBe(false)
    expect(OAuth.isStale(hour, 3_540_000)).toBe(true)
    const short = { ...hour, expires_at: 120_000 }
    expect(OAuth.isStale(short, 89_999)).toBe(false)
    expect(OAuth.isStale(short, 90_000)).toBe(true)
    expect(OAuth.isStale({ ...hour, expires_at: undefined }, Number.MAX_SAFE_INTEGER)).toBe(false)
  })
})
