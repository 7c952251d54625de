import { Unauthorized } from "@altan/domain/Errors"
import { TenantId, UserId } from "@altan/domain/Ids"
import { Principal, Role } from "@altan/domain/Principal"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as jose from "jose"
import { createHash, type KeyObject } from "node:crypto"
import { AuthConfig } from "./AuthConfig.js"
import { DevIssuer } from "./DevIssuer.js"
import { algorithms, algorithmsOf } from "./internal/keyAlgorithms.js"
import * as RemoteKeySet from "./RemoteKeySet.js"

/** Tokens longer than this are refused before parsing. */
export const maxTokenLength = 8192

/** Seconds of clock skew allowed on `exp`, `nbf` and `iat`. */
export const clockTolerance = 30

/** Verifies bearer tokens into principals. */
export class TokenVerifier extends Context.Tag("@altan/integrator/TokenVerifier")<TokenVerifier, {
  readonly verify: (token: string) => Effect.Effect<Principal, Unauthorized>
}>() {}

const Claims = Schema.Struct({
  tenant_id: TenantId,
  sub: UserId,
  role: Schema.optionalWith(Role, { default: () => "member" as const })
})
const decodeClaims = Schema.decodeUnknownEither(Claims)
const isTenantId = Schema.is(TenantId)
const isUserId = Schema.is(UserId)
const isRole = Schema.is(Role)

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
  if (error instanceof RemoteKeySet.KeySetUnavailable || error instanceof jose.errors.JWKSTimeout) {
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

/** How many verified tokens are remembered, and for how long at most (a key taken out of a JWKS stops working then). */
export const verifiedCache = { maxEntries: 10_000, maxAgeMs: 5 * 60_000 } as const

/**
 * A verifier over one key (or key resolver). Cheap checks come first: size and shape are checked before anything
 * is decoded, the algorithm before any key is looked up. `algorithms` defaults to what the key can verify.
 *
 * A token that verified is remembered by its SHA-256 digest (never the token itself) until it would be refused as
 * expired, and at most `cache.maxAgeMs`: a client repeating one token pays one signature check, not one per request.
 * Refusals are not remembered (they cost no key lookup beyond the first, see `RemoteKeySet`).
 */
export const make = (options: {
  readonly key: jose.JWTVerifyGetKey | KeyObject | jose.CryptoKey
  readonly issuer: string
  readonly audience: string
  readonly algorithms?: ReadonlyArray<string>
  readonly cache?: { readonly maxEntries: number; readonly maxAgeMs: number } | false
  /** The clock, epoch ms (tests). */
  readonly now?: () => number
}): TokenVerifier["Type"] => {
  const now = options.now ?? Date.now
  const cache = options.cache ?? verifiedCache
  const verified = new Map<string, { readonly principal: Principal; readonly until: number }>()
  const digest = (token: string) => createHash("sha256").update(token).digest("base64url")
  const remembered = (key: string): Principal | undefined => {
    const hit = verified.get(key)
    if (hit === undefined) return undefined
    if (hit.until > now()) return hit.principal
    verified.delete(key)
    return undefined
  }
  const remember = (key: string | undefined, principal: Principal, exp: number | undefined) => {
    if (key === undefined || cache === false) return
    const at = now()
    // jose accepts a token until `exp` plus the tolerance
    const until = Math.min(at + cache.maxAgeMs, exp === undefined ? Infinity : (exp + clockTolerance) * 1000)
    if (until <= at) return
    verified.set(key, { principal, until })
    // oldest first: a full cache forgets the entry remembered longest ago
    if (verified.size > cache.maxEntries) verified.delete(verified.keys().next().value!)
  }
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
  const verifyWith = (token: string) => {
    const at = options.now ? { ...verifyOptions, currentDate: new Date(options.now()) } : verifyOptions
    return typeof options.key === "function"
      ? jose.jwtVerify(token, options.key, at)
      : jose.jwtVerify(token, options.key, at)
  }
  return {
    verify: Effect.fn("TokenVerifier.verify", { captureStackTrace: false })(function*(token: string) {
      if (token.length === 0) return yield* reject("missing bearer token")
      if (token.length > maxTokenLength) {
        return yield* reject(`the token is too long (over ${maxTokenLength} characters)`)
      }
      if (!compactJws.test(token)) {
        return yield* reject("the token is not a signed JWT (header.payload.signature in base64url)")
      }
      const key = cache === false ? undefined : digest(token)
      const known = key === undefined ? undefined : remembered(key)
      if (known !== undefined) return known
      const { payload } = yield* Effect.tryPromise({
        try: () => verifyWith(token),
        catch: (e) => reject(describe(e))
      })
      // jose checks `iat` only against a maximum age; one from the future is a clock or issuer gone wrong
      if (payload.iat !== undefined && payload.iat > Math.floor(now() / 1000) + clockTolerance) {
        return yield* reject("the token's issued-at (iat) is in the future")
      }
      const claims = decodeClaims(payload)
      if (Either.isLeft(claims)) return yield* reject(claimsProblem(payload))
      const principal = new Principal({
        tenantId: claims.right.tenant_id,
        userId: claims.right.sub,
        role: claims.right.role
      })
      remember(key, principal, payload.exp)
      return principal
    })
  }
}

/**
 * The verifier for the configured key source: a cached remote key set (see `RemoteKeySet`), the configured
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
      const key = RemoteKeySet.make(keys.url, { onFailure, clock: yield* Effect.clock })
      return make({ key, issuer, audience })
    }
    const key = keys._tag === "PublicKey" ? keys.key : (yield* DevIssuer).publicKey
    return make({ key, issuer, audience })
  })
)
