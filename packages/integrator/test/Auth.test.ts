import * as AuditLog from "@altan/audit/AuditLog"
import * as Api from "@altan/domain/Api"
import { CurrentPrincipal } from "@altan/domain/Principal"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpServer from "@effect/platform/HttpServer"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as jose from "jose"
import { randomUUID } from "node:crypto"
import { createServer } from "node:http"
import * as AuthConfig from "../src/AuthConfig.js"
import * as Authentication from "../src/Authentication.js"
import * as DevIssuer from "../src/DevIssuer.js"
import * as TokenVerifier from "../src/TokenVerifier.js"
import { audience, issuer, type KeyServer, makeKey, now, sign, type SigningKey, startKeyServer } from "./jwks.js"

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")
const claimsOf = (extra: Record<string, unknown> = {}) => ({
  tenant_id: "acme",
  sub: "user-1",
  iss: issuer,
  aud: audience,
  exp: now() + 600,
  ...extra
})

/** HS256 over the claims with `secret` (e.g. the public key's own bytes) as the HMAC key. */
const signHs256 = (secret: string, header: Record<string, unknown> = {}) =>
  new jose.SignJWT(claimsOf()).setProtectedHeader({ alg: "HS256", ...header }).sign(new TextEncoder().encode(secret))

// The real `Authentication` middleware behind a minimal HttpApi on a loopback port ----------------------------

const Whoami = Schema.Struct({ tenant_id: Schema.String, user_id: Schema.String, role: Schema.String })

class WhoamiGroup extends HttpApiGroup.make("whoami")
  .add(HttpApiEndpoint.get("whoami", "/whoami").addSuccess(Whoami))
  .middleware(Api.Authentication)
{}
class TestApi extends HttpApi.make("test").add(WhoamiGroup) {}

const WhoamiLive = HttpApiBuilder.group(
  TestApi,
  "whoami",
  (handlers) =>
    handlers.handle(
      "whoami",
      () => Effect.map(CurrentPrincipal, (p) => ({ tenant_id: p.tenantId, user_id: p.userId, role: p.role }))
    )
)

interface Edge {
  readonly call: (token: string | undefined) => Promise<Answer>
  readonly verifier: TokenVerifier.TokenVerifier["Type"]
  readonly close: () => Promise<void>
}

interface Answer {
  readonly status: number
  readonly challenge: string | null
  readonly text: string
  readonly body: any
}

/** Serves `GET /whoami` behind `Authentication.layer` over the given verifier. */
const startEdge = async (verifier: Layer.Layer<TokenVerifier.TokenVerifier, any>): Promise<Edge> => {
  const layer = HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiBuilder.api(TestApi)),
    Layer.provide(WhoamiLive),
    Layer.provide(Authentication.layer),
    Layer.provide(AuditLog.layerNoop),
    // large enough for the 100 KiB token to reach the middleware (Node's default is 16 KiB)
    Layer.provideMerge(
      NodeHttpServer.layer(() => createServer({ maxHeaderSize: 256 * 1024 }), { port: 0, host: "127.0.0.1" })
    ),
    Layer.provideMerge(verifier)
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = Context.get(context, HttpServer.HttpServer).address as HttpServer.TcpAddress
  const base = `http://127.0.0.1:${address.port}`
  return {
    call: async (token) => {
      const res = await fetch(`${base}/whoami`, {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` }
      })
      const text = await res.text()
      return {
        status: res.status,
        challenge: res.headers.get("www-authenticate"),
        text,
        body: res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined
      }
    },
    verifier: Context.get(context, TokenVerifier.TokenVerifier),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** A verifier built by `TokenVerifier.layer` from a given `AuthConfig`. */
const fromConfig = (config: AuthConfig.AuthConfig["Type"]) =>
  TokenVerifier.layer.pipe(Layer.provide(DevIssuer.layer), Layer.provide(Layer.succeed(AuthConfig.AuthConfig, config)))

/** A verifier built by `TokenVerifier.layer` from environment variables. */
const fromEnv = (env: Record<string, string>) =>
  TokenVerifier.layer.pipe(
    Layer.provide(DevIssuer.layer),
    Layer.provideMerge(AuthConfig.layerConfig),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
  )

const configError = (env: Record<string, string>) =>
  Effect.runPromise(
    Effect.flip(
      Effect.provide(
        AuthConfig.AuthConfig,
        AuthConfig.layerConfig.pipe(
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
        )
      )
    )
  )

const expectPrincipal = (answer: Answer, principal: { tenant_id: string; user_id: string; role: string }) => {
  expect(answer.status, answer.text).toBe(200)
  expect(answer.body).toEqual(principal)
}

/** 401, the API's error envelope with a message matching `reason`, the Bearer challenge, and no trace of the token. */
const expect401 = (answer: Answer, reason: RegExp, token?: string) => {
  expect(answer.status, answer.text).toBe(401)
  expect(answer.body).toEqual({ error: { code: "invalid_token", message: expect.stringMatching(reason) } })
  expect(answer.challenge).toMatch(/^Bearer realm="altan", error="invalid_token", error_description="[^"]+"$/)
  expect(answer.challenge).toContain(answer.body.error.message)
  if (token !== undefined && token.length > 0) {
    for (const part of token.split(".").filter((p) => p.length > 8)) {
      expect(answer.text).not.toContain(part)
      expect(answer.challenge).not.toContain(part)
    }
  }
}

const acmeMember = { tenant_id: "acme", user_id: "user-1", role: "member" }

// -------------------------------------------------------------------------------------------------------------

describe("AUTH_JWKS_URL", () => {
  let k1: SigningKey
  let attacker: SigningKey
  let keys: KeyServer
  let edge: Edge

  beforeAll(async () => {
    k1 = await makeKey("ES256", "k1")
    attacker = await makeKey("ES256", "attacker")
    keys = await startKeyServer([k1.jwk])
    edge = await startEdge(fromConfig({ keys: { _tag: "Jwks", url: keys.url }, issuer, audience }))
  })
  afterAll(async () => {
    await edge?.close()
    await keys?.close()
  })

  const call = async (token: string) => ({ token, answer: await edge.call(token) })
  const rejected = async (token: string | Promise<string>, reason: RegExp) => {
    const { answer } = await call(await token)
    expect401(answer, reason, await token)
  }

  it("accepts a good token: member by default, admin when the token says so", async () => {
    expectPrincipal((await call(await sign(k1))).answer, acmeMember)
    expectPrincipal((await call(await sign(k1, { role: "admin", sub: "ada" }))).answer, {
      tenant_id: "acme",
      user_id: "ada",
      role: "admin"
    })
    expectPrincipal((await call(await sign(k1, { role: "member" }))).answer, acmeMember)
  })

  it("401 without a token", async () => {
    expect401(await edge.call(undefined), /missing bearer token/)
  })

  it("401 for alg: none, without looking up any key", async () => {
    const before = keys.requests()
    const token = `${b64({ alg: "none", typ: "JWT", kid: "k1" })}.${b64(claimsOf())}.`
    expect401(await edge.call(token), /not a signed JWT/, token)
    const withSignature = `${b64({ alg: "none", kid: "k1" })}.${b64(claimsOf())}.c2ln`
    expect401(await edge.call(withSignature), /algorithm is not accepted/, withSignature)
    expect(keys.requests()).toBe(before)
  })

  it("401 for HS256 signed with the published key's bytes as the HMAC secret (JWK and PEM)", async () => {
    await rejected(signHs256(JSON.stringify(k1.jwk), { kid: "k1" }), /algorithm is not accepted/)
    await rejected(signHs256(JSON.stringify(await jose.exportJWK(k1.publicKey))), /algorithm is not accepted/)
    await rejected(signHs256(k1.pem, { kid: "k1" }), /algorithm is not accepted/)
  })

  it("401 for a token signed by another key under a published kid", async () => {
    await rejected(sign({ ...attacker, kid: "k1" }), /signature does not verify/)
  })

  it("401 for the wrong audience or issuer, or without them", async () => {
    await rejected(sign(k1, {}, { aud: "someone-else" }), /^the token's audience \(aud\) is not accepted$/)
    await rejected(sign(k1, {}, { iss: "https://evil.test" }), /^the token's issuer \(iss\) is not accepted$/)
    const noAud = await new jose.SignJWT({ tenant_id: "acme", sub: "user-1" })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer(issuer)
      .setExpirationTime("10m")
      .sign(k1.privateKey)
    await rejected(noAud, /^the token has no audience \(aud\)$/)
  })

  it("401 once expired beyond the 30 s tolerance; accepted within it", async () => {
    await rejected(sign(k1, {}, { exp: now() - 60 }), /^the token has expired$/)
    expectPrincipal((await call(await sign(k1, {}, { exp: now() - 10 }))).answer, acmeMember)
    await rejected(sign(k1, {}, { exp: null }), /^the token has no expiry \(exp\)$/)
  })

  it("401 when nbf is in the future beyond the tolerance; accepted within it", async () => {
    await rejected(sign(k1, {}, { nbf: now() + 120 }), /^the token is not valid yet \(nbf is in the future\)$/)
    expectPrincipal((await call(await sign(k1, {}, { nbf: now() + 10 }))).answer, acmeMember)
  })

  it("401 when iat is in the future beyond the tolerance; accepted within it, and without iat", async () => {
    const inAYear = now() + 365 * 24 * 3600
    await rejected(
      sign(k1, {}, { iat: inAYear, exp: inAYear + 600 }),
      /^the token's issued-at \(iat\) is in the future$/
    )
    await rejected(sign(k1, {}, { iat: now() + 120 }), /^the token's issued-at \(iat\) is in the future$/)
    expectPrincipal((await call(await sign(k1, {}, { iat: now() + 10 }))).answer, acmeMember)
    expectPrincipal((await call(await sign(k1, {}, { iat: null }))).answer, acmeMember)
  })

  it("401 without tenant_id, or with one the TenantId schema refuses", async () => {
    await rejected(sign(k1, { tenant_id: undefined }), /^the token has no tenant_id claim$/)
    for (const tenant_id of ["", "a/b", "-acme", "x".repeat(65), 42, ["acme"]]) {
      await rejected(sign(k1, { tenant_id }), /^the token's tenant_id claim must be 1-64 letters/)
    }
    expectPrincipal((await call(await sign(k1, { tenant_id: "T_1-x" }))).answer, { ...acmeMember, tenant_id: "T_1-x" })
  })

  it("401 for a role other than admin or member", async () => {
    for (const role of ["owner", "ADMIN", "", null, 1, ["admin"]]) {
      await rejected(sign(k1, { role }), /^the token's role claim must be admin or member$/)
    }
  })

  it("401 without sub, or with a sub that is not a short string", async () => {
    await rejected(sign(k1, { sub: undefined }), /^the token has no subject \(sub\)$/)
    await rejected(sign(k1, { sub: "" }), /^the token's subject \(sub\) must be a string of 1-256 characters$/)
  })

  it("ignores jku, x5u, jwk and x5c: the attacker's key server gets no request", async () => {
    const evil = await startKeyServer([attacker.jwk])
    try {
      const pointers = {
        jku: evil.url.href,
        x5u: evil.url.href,
        jwk: await jose.exportJWK(attacker.publicKey),
        x5c: ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]
      }
      await rejected(sign(attacker, {}, { header: { jku: evil.url.href } }), /no trusted key matches/)
      await rejected(sign({ ...attacker, kid: "k1" }, {}, { header: pointers }), /signature does not verify/)
      await rejected(
        sign({ ...attacker, kid: undefined as any }, {}, { header: pointers }),
        /signature does not verify/
      )
      expect(evil.requests()).toBe(0)
    } finally {
      await evil.close()
    }
  })

  it("refuses a 100 KiB token before any parsing, crypto or key lookup", async () => {
    const big = `${b64({ alg: "ES256", kid: "k1" })}.${"A".repeat(100 * 1024)}.${"B".repeat(86)}`
    const before = keys.requests()
    const started = performance.now()
    expect401(await edge.call(big), /^the token is too long \(over 8192 characters\)$/, big)
    expect(performance.now() - started).toBeLessThan(1_000)
    const direct = performance.now()
    for (let i = 0; i < 100; i++) {
      const exit = await Effect.runPromiseExit(edge.verifier.verify(big))
      expect(Exit.isFailure(exit)).toBe(true)
    }
    expect(performance.now() - direct).toBeLessThan(500)
    expect(keys.requests()).toBe(before)
  })
})

describe("unknown kid flood", () => {
  it("200 tokens with random kids in parallel cost one JWKS fetch", async () => {
    const k1 = await makeKey("ES256", "k1")
    const forger = await makeKey("ES256", "forger")
    const keys = await startKeyServer([k1.jwk])
    const edge = await startEdge(fromConfig({ keys: { _tag: "Jwks", url: keys.url }, issuer, audience }))
    try {
      const tokens = await Promise.all(
        Array.from({ length: 200 }, () => sign({ ...forger, kid: randomUUID() }))
      )
      const answers = await Promise.all(tokens.map((token) => edge.call(token)))
      answers.forEach((answer, i) => expect401(answer, /^no trusted key matches the token's kid/, tokens[i]))
      expect(keys.requests()).toBeLessThanOrEqual(2)
      expect(keys.requests()).toBe(1)

      // a second wave, after the set is cached, still inside the 30 s cooldown
      const again = await Promise.all(tokens.slice(0, 50).map((token) => edge.call(token)))
      again.forEach((answer) => expect(answer.status).toBe(401))
      expectPrincipal(await edge.call(await sign(k1)), acmeMember)
      expect(keys.requests()).toBe(1)
    } finally {
      await edge.close()
      await keys.close()
    }
  })
})

describe("AUTH_PUBLIC_KEY", () => {
  it("accepts an RS256 key in PEM form (also with escaped newlines) and refuses HMAC over its bytes", async () => {
    const rsa = await makeKey("RS256", "ignored")
    const pss = {
      ...rsa,
      alg: "PS256",
      privateKey: await jose.importPKCS8(await jose.exportPKCS8(rsa.privateKey), "PS256")
    }
    for (const pem of [rsa.pem, rsa.pem.replace(/\n/g, "\\n")]) {
      const edge = await startEdge(
        fromEnv({ AUTH_PUBLIC_KEY: pem, AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience })
      )
      try {
        expectPrincipal(await edge.call(await sign(rsa, { role: "admin" })), { ...acmeMember, role: "admin" })
        expectPrincipal(await edge.call(await sign(pss)), acmeMember)
        for (const secret of [rsa.pem, JSON.stringify(rsa.jwk)]) {
          const token = await signHs256(secret)
          expect401(await edge.call(token), /^the token's algorithm is not accepted/, token)
        }
        const es = await makeKey("ES256", "other")
        const token = await sign(es)
        expect401(await edge.call(token), /^the token's algorithm is not accepted/, token)
      } finally {
        await edge.close()
      }
    }
  })

  it("accepts an Ed25519 key in JWK form and refuses HMAC over its bytes", async () => {
    const ed = await makeKey("EdDSA", "ed")
    const edge = await startEdge(
      fromEnv({ AUTH_PUBLIC_KEY: JSON.stringify(ed.jwk), AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience })
    )
    try {
      expectPrincipal(await edge.call(await sign(ed)), acmeMember)
      for (const secret of [JSON.stringify(ed.jwk), ed.pem]) {
        const token = await signHs256(secret)
        expect401(await edge.call(token), /^the token's algorithm is not accepted/, token)
      }
      const other = await makeKey("EdDSA", "ed")
      const forged = await sign(other)
      expect401(await edge.call(forged), /^the token's signature does not verify$/, forged)
    } finally {
      await edge.close()
    }
  })
})

describe("configuration", () => {
  it("fails without AUTH_ISSUER or AUTH_AUDIENCE when a real key is configured", async () => {
    const { pem } = await makeKey("ES256", "k")
    const noIssuer = await configError({ AUTH_PUBLIC_KEY: pem, AUTH_AUDIENCE: audience })
    expect(ConfigError.isMissingData(noIssuer) && noIssuer.path).toEqual(["AUTH_ISSUER"])
    const noAudience = await configError({ AUTH_JWKS_URL: "https://idp.test/jwks.json", AUTH_ISSUER: issuer })
    expect(ConfigError.isMissingData(noAudience) && noAudience.path).toEqual(["AUTH_AUDIENCE"])
    const jwksNoIssuer = await configError({ AUTH_JWKS_URL: "https://idp.test/jwks.json", AUTH_AUDIENCE: audience })
    expect(ConfigError.isMissingData(jwksNoIssuer) && jwksNoIssuer.path).toEqual(["AUTH_ISSUER"])
  })

  it("refuses both key sources at once, a non-http JWKS URL and keys that cannot verify an accepted algorithm", async () => {
    const { pem } = await makeKey("ES256", "k")
    const base = { AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience }
    const both = await configError({ ...base, AUTH_PUBLIC_KEY: pem, AUTH_JWKS_URL: "https://idp.test/jwks.json" })
    expect(both).toMatchObject({ _op: "InvalidData", path: ["AUTH_JWKS_URL"] })
    const file = await configError({ ...base, AUTH_JWKS_URL: "file:///etc/jwks.json" })
    expect(file).toMatchObject({ _op: "InvalidData", path: ["AUTH_JWKS_URL"] })
    const secret = await configError({ ...base, AUTH_PUBLIC_KEY: JSON.stringify({ kty: "oct", k: "c2VjcmV0" }) })
    expect(secret).toMatchObject({ _op: "InvalidData", path: ["AUTH_PUBLIC_KEY"] })
    const p384 = await jose.exportSPKI((await jose.generateKeyPair("ES384", { extractable: true })).publicKey)
    const curve = await configError({ ...base, AUTH_PUBLIC_KEY: p384 })
    expect(curve).toMatchObject({ _op: "InvalidData", path: ["AUTH_PUBLIC_KEY"] })
    const garbage = await configError({ ...base, AUTH_PUBLIC_KEY: "not a key" })
    expect(garbage).toMatchObject({ _op: "InvalidData", path: ["AUTH_PUBLIC_KEY"] })
  })

  it("reads a JWKS URL, and falls back to the development key when no key is configured", async () => {
    const read = (env: Record<string, string>) =>
      Effect.runPromise(
        Effect.provide(
          AuthConfig.AuthConfig,
          AuthConfig.layerConfig.pipe(
            Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
          )
        )
      )
    const jwks = await read({
      AUTH_JWKS_URL: "https://idp.test/jwks.json",
      AUTH_ISSUER: issuer,
      AUTH_AUDIENCE: audience
    })
    expect(jwks).toEqual({ keys: { _tag: "Jwks", url: new URL("https://idp.test/jwks.json") }, issuer, audience })
    expect(await read({})).toEqual({
      keys: { _tag: "Dev" },
      issuer: AuthConfig.devIssuer,
      audience: AuthConfig.devAudience
    })
  })

  it("never falls back to the development key when an issuer or audience says this is a real deployment", async () => {
    const issuerOnly = await configError({ AUTH_ISSUER: issuer })
    expect(issuerOnly).toMatchObject({ _op: "InvalidData", path: ["AUTH_ISSUER"] })
    expect(String(issuerOnly)).toContain("neither AUTH_JWKS_URL nor AUTH_PUBLIC_KEY")
    const audienceOnly = await configError({ AUTH_AUDIENCE: audience })
    expect(audienceOnly).toMatchObject({ _op: "InvalidData", path: ["AUTH_AUDIENCE"] })
  })

  it("never falls back to the development key under NODE_ENV=production (the container image's)", async () => {
    const production = await configError({ NODE_ENV: "production" })
    expect(production).toMatchObject({ _op: "InvalidData", path: ["AUTH_JWKS_URL"] })
    expect(String(production)).toContain("NODE_ENV=production needs AUTH_JWKS_URL or AUTH_PUBLIC_KEY")
  })
})
