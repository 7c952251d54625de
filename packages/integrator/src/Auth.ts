import { AuditLog } from "@altan/audit/AuditLog"
import { Authentication } from "@altan/domain/Api"
import { Unauthorized } from "@altan/domain/Errors"
import { TenantId, UserId } from "@altan/domain/Ids"
import { Principal, Role } from "@altan/domain/Principal"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as jose from "jose"
import { createPublicKey, KeyObject } from "node:crypto"

/** Asymmetric algorithms only: an HS256 token "signed" with the public key must never verify. */
export const algorithms: ReadonlyArray<string> = ["RS256", "PS256", "ES256", "EdDSA"]

/** Tokens longer than this are refused before parsing. */
export const maxTokenLength = 8192

/** Seconds of clock skew allowed on `exp`, `nbf` and `iat`. */
export const clockTolerance = 30

/** Where verification keys come from and which issuer/audience tokens must name. */
export class AuthConfig extends Context.Tag("@altan/integrator/AuthConfig")<AuthConfig, {
  readonly keys:
    | { readonly _tag: "Jwks"; readonly url: URL }
    | { readonly _tag: "PublicKey"; readonly key: KeyObject }
    | { readonly _tag: "Dev" }
  readonly issuer: string
  readonly audience: string
}>() {}

export const devIssuer = "altan-dev"
export const devAudience = "altan"

/** The algorithms a key can verify, within `algorithms`; empty for any other key (symmetric, P-384, short RSA...). */
export const algorithmsOf = (key: KeyObject | jose.CryptoKey): ReadonlyArray<string> => {
  if (key instanceof KeyObject) {
    if (key.type !== "public" && key.type !== "private") return []
    const details = key.asymmetricKeyDetails ?? {}
    switch (key.asymmetricKeyType) {
      case "rsa":
        return (details.modulusLength ?? 0) >= 2048 ? ["RS256", "PS256"] : []
      case "rsa-pss":
        return (details.modulusLength ?? 0) >= 2048 ? ["PS256"] : []
      case "ec":
        return details.namedCurve === "prime256v1" ? ["ES256"] : []
      case "ed25519":
        return ["EdDSA"]
      default:
        return []
    }
  }
  const algorithm = key.algorithm as { readonly name: string; readonly namedCurve?: string }
  switch (algorithm.name) {
    case "RSASSA-PKCS1-v1_5":
      return ["RS256"]
    case "RSA-PSS":
      return ["PS256"]
    case "ECDSA":
      return algorithm.namedCurve === "P-256" ? ["ES256"] : []
    case "Ed25519":
      return ["EdDSA"]
    default:
      return []
  }
}

const parsePublicKey = (text: string): KeyObject => {
  const key = text.trim().startsWith("{")
    ? createPublicKey({ key: JSON.parse(text), format: "jwk" })
    : createPublicKey(text.replace(/\\n/g, "\n"))
  if (algorithmsOf(key).length === 0) {
    throw new Error(
      `a ${key.asymmetricKeyType} key cannot verify any of ${algorithms.join(", ")} (RSA >= 2048 bits, P-256, Ed25519)`
    )
  }
  return key
}

const invalid = (name: string, message: string) => Effect.fail(ConfigError.InvalidData([name], message))

const issuerConfig = Config.nonEmptyString("AUTH_ISSUER").pipe(
  Config.withDescription("The `iss` every token must carry; required with AUTH_JWKS_URL or AUTH_PUBLIC_KEY.")
)
const audienceConfig = Config.nonEmptyString("AUTH_AUDIENCE").pipe(
  Config.withDescription("An `aud` every token must carry; required with AUTH_JWKS_URL or AUTH_PUBLIC_KEY.")
)

/**
 * `AUTH_JWKS_URL` (http or https) or `AUTH_PUBLIC_KEY` (PEM or JWK), not both, with `AUTH_ISSUER` and
 * `AUTH_AUDIENCE` required alongside. With none of them set, the process runs with a generated development key.
 */
export const layerConfig: Layer.Layer<AuthConfig, ConfigError.ConfigError> = Layer.effect(
  AuthConfig,
  Effect.gen(function*() {
    const jwks = yield* Config.option(
      Config.url("AUTH_JWKS_URL").pipe(Config.withDescription("The issuer's JSON Web Key Set, fetched and cached."))
    )
    const publicKey = yield* Config.option(
      Config.nonEmptyString("AUTH_PUBLIC_KEY").pipe(Config.withDescription("The issuer's public key, PEM or JWK."))
    )
    if (Option.isNone(jwks) && Option.isNone(publicKey)) {
      // an issuer or audience without a key means a real deployment missing its key: never fall back to a
      // generated key (and a printed admin token) there
      const issuer = yield* Config.option(Config.string("AUTH_ISSUER"))
      const audience = yield* Config.option(Config.string("AUTH_AUDIENCE"))
      if (Option.isSome(issuer) || Option.isSome(audience)) {
        return yield* invalid(
          Option.isSome(issuer) ? "AUTH_ISSUER" : "AUTH_AUDIENCE",
          "AUTH_ISSUER/AUTH_AUDIENCE are set but neither AUTH_JWKS_URL nor AUTH_PUBLIC_KEY is"
        )
      }
      return { keys: { _tag: "Dev" as const }, issuer: devIssuer, audience: devAudience }
    }
    if (Option.isSome(jwks) && Option.isSome(publicKey)) {
      return yield* invalid("AUTH_JWKS_URL", "set AUTH_JWKS_URL or AUTH_PUBLIC_KEY, not both")
    }
    const issuer = yield* issuerConfig
    const audience = yield* audienceConfig
    if (Option.isSome(jwks)) {
      const url = jwks.value
      if (url.protocol !== "https:" && url.protocol !== "http:") {
        return yield* invalid("AUTH_JWKS_URL", "AUTH_JWKS_URL must be an http or https URL")
      }
      return { keys: { _tag: "Jwks" as const, url }, issuer, audience }
    }
    const key = yield* Effect.try({
      try: () => parsePublicKey(Option.getOrThrow(publicKey)),
      catch: (e) =>
        ConfigError.InvalidData(
          ["AUTH_PUBLIC_KEY"],
          `AUTH_PUBLIC_KEY is not a usable PEM or JWK public key: ${e instanceof Error ? e.message : String(e)}`
        )
    })
    return { keys: { _tag: "PublicKey" as const, key }, issuer, audience }
  })
)

/** The development signing key of the embedded default; it exists only when no real key is configured. */
export class DevIssuer extends Context.Tag("@altan/integrator/DevIssuer")<DevIssuer, {
  readonly publicKey: jose.CryptoKey
  readonly issue: (
    claims: { tenant_id: string; sub: string; role?: "admin" | "member" },
    ttl?: string
  ) => Effect.Effect<string>
}>() {}

export const layerDevIssuer: Layer.Layer<DevIssuer, never, AuthConfig> = Layer.effect(
  DevIssuer,
  Effect.gen(function*() {
    const config = yield* AuthConfig
    const { privateKey, publicKey } = yield* Effect.promise(() => jose.generateKeyPair("ES256", { extractable: true }))
    return {
      publicKey,
      issue: (claims, ttl = "30d") =>
        Effect.promise(() =>
          new jose.SignJWT({ ...claims })
            .setProtectedHeader({ alg: "ES256", kid: "dev" })
            .setIssuer(config.issuer)
            .setAudience(config.audience)
            .setIssuedAt()
            .setExpirationTime(ttl)
            .sign(privateKey)
        )
    }
  })
)

/** How a remote key set is fetched and kept. */
export interface RemoteKeySetOptions {
  /** Least time between two fetches after a successful one, e.g. for an unknown `kid` (default 30 s). */
  readonly cooldownMs?: number
  /** Least time between two fetches after a failed one (default 5 s). */
  readonly retryMs?: number
  /** Age after which the set is fetched again before use (default 10 min); on failure the old set stays. */
  readonly maxAgeMs?: number
  /** Time limit of one fetch, body included (default 5 s). */
  readonly timeoutMs?: number
  /** Largest key set accepted (default 256 KiB). */
  readonly maxBytes?: number
  /** The fetch implementation (default `globalThis.fetch`). */
  readonly fetch?: typeof globalThis.fetch
  /** Told about each failed fetch, e.g. to log it; requests only see that the set is unavailable. */
  readonly onFailure?: (error: unknown) => void
}

/** The remote key set could not be fetched, or it is not a JWKS. */
class KeySetUnavailable extends Error {}

const readLimited = async (response: Response, maxBytes: number): Promise<string> => {
  if (Number(response.headers.get("content-length") ?? 0) > maxBytes) {
    throw new KeySetUnavailable(`the key set is over ${maxBytes} bytes`)
  }
  if (response.body === null) return ""
  const reader = response.body.getReader()
  const chunks: Array<Uint8Array> = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel()
      throw new KeySetUnavailable(`the key set is over ${maxBytes} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString("utf8")
}

/**
 * A JWKS fetched from `url` and cached. Keys are selected by the token's `alg` and `kid` only; `jku`, `x5u`,
 * `jwk` and `x5c` headers are never looked at. Fetches are single-flight, and a new one starts at most once per
 * `cooldownMs` after a success (once per `retryMs` after a failure): a flood of tokens with unknown kids, or an
 * unreachable issuer, costs a bounded number of requests. A rotated-in key is found by the first refetch after
 * the cooldown; keys stay usable for as long as the set publishes them.
 */
export const remoteKeySet = (url: URL, options: RemoteKeySetOptions = {}): jose.JWTVerifyGetKey => {
  const cooldownMs = options.cooldownMs ?? 30_000
  const retryMs = options.retryMs ?? 5_000
  const maxAgeMs = options.maxAgeMs ?? 10 * 60_000
  const timeoutMs = options.timeoutMs ?? 5_000
  const maxBytes = options.maxBytes ?? 256 * 1024
  const fetchImpl = options.fetch ?? globalThis.fetch
  let keys: ReturnType<typeof jose.createLocalJWKSet> | undefined
  let fetchedAt = Number.NEGATIVE_INFINITY
  let attemptedAt = Number.NEGATIVE_INFINITY
  let lastFailed = false
  let pending: Promise<void> | undefined

  const load = async () => {
    const signal = AbortSignal.timeout(timeoutMs)
    const response = await fetchImpl(url, {
      redirect: "manual",
      signal,
      headers: { accept: "application/jwk-set+json, application/json" }
    })
    if (response.status !== 200) {
      await response.body?.cancel()
      throw new KeySetUnavailable(`the key set answered ${response.status}`)
    }
    const set = jose.createLocalJWKSet(JSON.parse(await readLimited(response, maxBytes)))
    keys = set
    fetchedAt = Date.now()
  }

  /** Joins the fetch under way, or starts one when the last is old enough; true once a fetch has settled. */
  const refresh = async (): Promise<boolean> => {
    if (pending === undefined) {
      if (Date.now() - attemptedAt < (lastFailed ? retryMs : cooldownMs)) return false
      attemptedAt = Date.now()
      pending = load().then(
        () => {
          lastFailed = false
        },
        (error) => {
          lastFailed = true
          options.onFailure?.(error)
        }
      ).finally(() => {
        pending = undefined
      })
    }
    await pending
    return true
  }

  return async (header, token) => {
    if (keys === undefined || Date.now() - fetchedAt >= maxAgeMs) await refresh()
    const current = keys
    if (current === undefined) throw new KeySetUnavailable("the key set could not be fetched")
    try {
      return await current(header, token)
    } catch (error) {
      if (!(error instanceof jose.errors.JWKSNoMatchingKey) || !(await refresh()) || keys === current) throw error
      return await keys!(header, token)
    }
  }
}

const Claims = Schema.Struct({
  tenant_id: TenantId,
  sub: UserId,
  role: Schema.optionalWith(Role, { default: () => "member" as const })
})
const decodeClaims = Schema.decodeUnknownEither(Claims)
const isTenantId = Schema.is(TenantId)
const isUserId = Schema.is(UserId)
const isRole = Schema.is(Role)

/** Verifies bearer tokens into principals. */
export class TokenVerifier extends Context.Tag("@altan/integrator/TokenVerifier")<TokenVerifier, {
  readonly verify: (token: string) => Effect.Effect<Principal, Unauthorized>
}>() {}

const reject = (message: string) => new Unauthorized({ message })

const claimNames: Record<string, string> = {
  iss: "issuer (iss)",
  aud: "audience (aud)",
  sub: "subject (sub)",
  exp: "expiry (exp)",
  nbf: "not-before (nbf)",
  iat: "issued-at (iat)"
}

/** What is wrong with a token, from jose's error; never quotes the token or its header values. */
const describe = (error: unknown): string => {
  if (error instanceof jose.errors.JWTExpired) return "the token has expired"
  if (error instanceof jose.errors.JWTClaimValidationFailed) {
    const name = claimNames[error.claim] ?? `${error.claim} claim`
    if (error.reason === "missing") return `the token has no ${name}`
    if (error.claim === "nbf") return "the token is not valid yet (nbf is in the future)"
    if (error.reason === "check_failed") return `the token's ${name} is not accepted`
    return `the token's ${name} is malformed`
  }
  if (error instanceof jose.errors.JOSEAlgNotAllowed) {
    return `the token's algorithm is not accepted (accepted: ${algorithms.join(", ")})`
  }
  if (error instanceof jose.errors.JWSSignatureVerificationFailed) return "the token's signature does not verify"
  if (error instanceof jose.errors.JWKSNoMatchingKey) return "no trusted key matches the token's kid and algorithm"
  if (error instanceof jose.errors.JWKSMultipleMatchingKeys) return "the token's signature does not verify"
  if (error instanceof KeySetUnavailable || error instanceof jose.errors.JWKSTimeout) {
    return "the issuer's key set could not be fetched; try again later"
  }
  if (error instanceof jose.errors.JOSENotSupported) return "the token uses an unsupported algorithm or header"
  return "the token is malformed"
}

const compactJws = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

const claimsProblem = (payload: jose.JWTPayload): string => {
  if (payload.tenant_id === undefined) return "the token has no tenant_id claim"
  if (!isTenantId(payload.tenant_id)) {
    return "the token's tenant_id claim must be 1-64 letters, digits, _ or -, starting with a letter or digit"
  }
  if (!isUserId(payload.sub)) return "the token's subject (sub) must be a string of 1-256 characters"
  if (payload.role !== undefined && !isRole(payload.role)) return "the token's role claim must be admin or member"
  return "the token's claims are invalid"
}

/**
 * A verifier over one key (or key resolver). Cheap checks come first: size and shape are checked before anything
 * is decoded, the algorithm before any key is looked up. `algorithms` defaults to what the key can verify.
 */
export const make = (options: {
  readonly key: jose.JWTVerifyGetKey | KeyObject | jose.CryptoKey
  readonly issuer: string
  readonly audience: string
  readonly algorithms?: ReadonlyArray<string>
}): TokenVerifier["Type"] => {
  const allowed = [
    ...(options.algorithms ?? (typeof options.key === "function" ? algorithms : algorithmsOf(options.key)))
  ].filter((alg) => algorithms.includes(alg))
  const verifyOptions: jose.JWTVerifyOptions = {
    issuer: options.issuer,
    audience: options.audience,
    algorithms: allowed,
    clockTolerance,
    requiredClaims: ["exp", "sub"]
  }
  const verifyWith = (token: string) =>
    typeof options.key === "function"
      ? jose.jwtVerify(token, options.key, verifyOptions)
      : jose.jwtVerify(token, options.key, verifyOptions)
  return {
    verify: (token) =>
      Effect.gen(function*() {
        if (token.length === 0) return yield* reject("missing bearer token")
        if (token.length > maxTokenLength) {
          return yield* reject(`the token is too long (over ${maxTokenLength} characters)`)
        }
        if (!compactJws.test(token)) {
          return yield* reject("the token is not a signed JWT (header.payload.signature in base64url)")
        }
        const { payload } = yield* Effect.tryPromise({
          try: () => verifyWith(token),
          catch: (e) => reject(describe(e))
        })
        // jose checks `iat` only against a maximum age; one from the future is a clock or issuer gone wrong
        if (payload.iat !== undefined && payload.iat > Math.floor(Date.now() / 1000) + clockTolerance) {
          return yield* reject("the token's issued-at (iat) is in the future")
        }
        const claims = decodeClaims(payload)
        if (Either.isLeft(claims)) return yield* reject(claimsProblem(payload))
        return new Principal({ tenantId: claims.right.tenant_id, userId: claims.right.sub, role: claims.right.role })
      }).pipe(Effect.withSpan("TokenVerifier.verify", { captureStackTrace: false }))
  }
}

/**
 * The verifier for the configured key source: a cached remote key set (see `remoteKeySet`), the configured
 * public key, or the development key.
 */
export const layer: Layer.Layer<TokenVerifier, never, AuthConfig | DevIssuer> = Layer.effect(
  TokenVerifier,
  Effect.gen(function*() {
    const { audience, issuer, keys } = yield* AuthConfig
    if (keys._tag === "Jwks") {
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      const onFailure = (error: unknown) =>
        runFork(
          Effect.logWarning("the JWKS could not be fetched").pipe(
            Effect.annotateLogs({ url: keys.url.href, error: error instanceof Error ? error.message : String(error) })
          )
        )
      return make({ key: remoteKeySet(keys.url, { onFailure }), issuer, audience })
    }
    const key = keys._tag === "PublicKey" ? keys.key : (yield* DevIssuer).publicKey
    return make({ key, issuer, audience })
  })
)

/** The RFC 6750 challenge of a 401; the description is the error's message, which never quotes the token. */
export const challenge = (error: Unauthorized): string =>
  `Bearer realm="altan", error="invalid_token", error_description="${error.message.replace(/["\\]/g, "'")}"`

/**
 * The caller of the request being served, once its token is verified: the edge provides an empty holder
 * per request and reads it after the answer, to audit what the caller did.
 */
export class RequestPrincipal extends Context.Tag("@altan/integrator/RequestPrincipal")<RequestPrincipal, {
  current: Principal | undefined
}>() {}

/**
 * The `Authentication` middleware of the public API: bearer token -> `CurrentPrincipal`. A refusal is a 401
 * with the error envelope and a `WWW-Authenticate: Bearer error="invalid_token"` challenge naming the problem.
 */
export const AuthenticationLive: Layer.Layer<Authentication, never, TokenVerifier | AuditLog> = Layer.effect(
  Authentication,
  Effect.gen(function*() {
    const verifier = yield* TokenVerifier
    const audit = yield* AuditLog
    return {
      bearer: (token) =>
        verifier.verify(Redacted.value(token).trim()).pipe(
          Effect.tap((principal) =>
            Effect.map(Effect.serviceOption(RequestPrincipal), (holder) => {
              if (Option.isSome(holder)) holder.value.current = principal
            })
          ),
          Effect.tapError((error) =>
            Effect.zipRight(
              // the token is not trusted, so neither is its tenant: the record is under "-"
              Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
                audit.record({
                  tenant_id: "-",
                  action: "auth.failure",
                  target: `${request.method} ${request.url.split("?")[0]}`,
                  outcome: "denied",
                  details: { reason: error.message }
                })),
              HttpApp.appendPreResponseHandler((_request, response) =>
                Effect.succeed(
                  response.status === 401
                    ? HttpServerResponse.setHeader(response, "www-authenticate", challenge(error))
                    : response
                )
              )
            )
          )
        )
    }
  })
)
