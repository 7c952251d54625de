import { ConnectionRequired } from "@altan/domain/Connection"
import type { OAuth2Connection } from "@altan/domain/ConnectionConfig"
import { Egress } from "@altan/domain/Egress"
import type { TenantId } from "@altan/domain/Ids"
import * as OAuth from "@altan/integrator/OAuth"
import * as OAuthSession from "@altan/integrator/OAuthSession"
import * as SecretStore from "@altan/integrator/SecretStore"
import * as ToolService from "@altan/tool/ToolService"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"

/**
 * The token holder of one connection, driven directly: the provider is a loopback token endpoint that rotates refresh
 * tokens and answers refreshes slowly (so concurrent callers pile up), and time is the test clock's, so an expiry is
 * reached by adjusting it rather than by sleeping.
 */
const grants: Array<Record<string, string>> = []
let refuse = false
let server: Server
let tokenUrl = ""
beforeAll(async () => {
  server = createServer((req, res) => {
    let body = ""
    req.on("data", (c) => (body += c))
    req.on("end", () => {
      const form = Object.fromEntries(new URLSearchParams(body))
      grants.push(form)
      const n = grants.length
      const answer = refuse
        ? [400, { error: "invalid_grant", error_description: "refresh token revoked" }] as const
        : [200, { access_token: `at-${n}`, refresh_token: `rt-${n}`, expires_in: 3600, token_type: "Bearer" }] as const
      setTimeout(
        () => res.writeHead(answer[0], { "content-type": "application/json" }).end(JSON.stringify(answer[1])),
        50
      )
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  tokenUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

const tenant = "acme" as TenantId
const config = (): OAuth2Connection => ({
  type: "oauth2",
  client_id: "app",
  client_secret_secret: "app_secret",
  authorize_url: "https://idp.example/authorize",
  token_url: tokenUrl,
  scopes: [],
  client_auth: "post"
} as OAuth2Connection)

const services = Layer.mergeAll(SecretStore.layerMemory, OAuth.layerMemory, ToolService.egressTest())

/** A session for `acme/crm`, its app's client secret set and a first grant exchanged (at test time 0). */
const connected = Effect.gen(function*() {
  grants.length = 0
  refuse = false
  const secrets = yield* SecretStore.SecretStore
  const oauthStore = yield* OAuth.OAuthStore
  yield* Effect.orDie(secrets.put(tenant, "app_secret", Redacted.make("s3cret")))
  const session = OAuthSession.make({ secrets, oauthStore, egress: yield* Egress }, tenant, "crm")
  yield* Effect.orDie(session.exchange(config(), { code: "c", code_verifier: "v", redirect_uri: "https://api/cb" }))
  return { session, secrets, oauthStore }
})

const token = (session: OAuthSession.OAuthSession, force = false) =>
  session.accessToken(config(), force).pipe(Effect.map(Redacted.value))

describe("OAuthSession", () => {
  it.effect("50 concurrent calls on an expired token refresh it once, and the next expiry uses the rotated refresh token", () =>
    Effect.gen(function*() {
      const { secrets, session } = yield* connected
      expect(yield* token(session)).toBe("Bearer at-1")
      // a minute before expiry counts as expired
      yield* TestClock.adjust("3541 seconds")
      const all = yield* Effect.all(Array.from({ length: 50 }, () => token(session)), { concurrency: "unbounded" })
      expect(new Set(all)).toEqual(new Set(["Bearer at-2"]))
      expect(grants.map((g) => g.grant_type)).toEqual(["authorization_code", "refresh_token"])
      expect(grants[1]!.refresh_token).toBe("rt-1")
      // the rotated tokens are in the vault, where a new actor would find them
      const stored = Option.flatMap(
        yield* Effect.orDie(secrets.get(tenant, OAuth.tokensSecret("crm"))),
        OAuth.decodeTokens
      )
      expect(Option.map(stored, (t) => [t.access_token, t.refresh_token])).toEqual(Option.some(["at-2", "rt-2"]))

      yield* TestClock.adjust("3600 seconds")
      expect(yield* token(session)).toBe("Bearer at-3")
      expect(grants[2]!.refresh_token).toBe("rt-2")
    }).pipe(Effect.provide(services)))

  it.effect("a token the API refused (force) is refreshed once however many calls saw the refusal", () =>
    Effect.gen(function*() {
      const { session } = yield* connected
      const all = yield* Effect.all(Array.from({ length: 10 }, () => token(session, true)), {
        concurrency: "unbounded"
      })
      expect(new Set(all)).toEqual(new Set(["Bearer at-2"]))
      expect(grants).toHaveLength(2)
    }).pipe(Effect.provide(services)))

  it.effect("a refused refresh (invalid_grant) marks the connection needs_reauth and forgets its tokens", () =>
    Effect.gen(function*() {
      const { oauthStore, secrets, session } = yield* connected
      refuse = true
      yield* TestClock.adjust("3600 seconds")
      const error = yield* Effect.flip(token(session))
      expect(error).toBeInstanceOf(ConnectionRequired)
      expect(error).toMatchObject({ provider: "crm", reason: "needs_reauth" })
      expect(Option.map(yield* oauthStore.getStatus(tenant, "crm"), (s) => s.status)).toEqual(
        Option.some("needs_reauth")
      )
      expect(yield* Effect.orDie(secrets.get(tenant, OAuth.tokensSecret("crm")))).toEqual(Option.none())
      expect(session.holdsToken()).toBe(false)
      // and stays so: no second refresh is attempted with what was refused
      expect(yield* Effect.flip(token(session))).toMatchObject({ _tag: "ConnectionRequired", reason: "needs_reauth" })
      expect(grants).toHaveLength(2)
    }).pipe(Effect.provide(services)))
})
