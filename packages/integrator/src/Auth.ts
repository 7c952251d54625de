import { Authentication } from "@altan/domain/Api"
import { Unauthorized } from "@altan/domain/Errors"
import { TenantId, UserId } from "@altan/domain/Ids"
import { Principal, Role } from "@altan/domain/Principal"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as jose from "jose"
import { createPublicKey, type KeyObject } from "node:crypto"

/** Asymmetric algorithms only: an HS256 token "signed" with the public key must never verify. */
export const algorithms = ["RS256", "PS256", "ES256", "EdDSA"]

/** Tokens longer than this are refused before parsing. */
export const maxTokenLength = 8192

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

const parsePublicKey = (text: string): KeyObject =>
  text.trim().startsWith("{")
    ? createPublicKey({ key: JSON.parse(text), format: "jwk" })
    : createPublicKey(text.replace(/\\n/g, "\n"))

/**
 * `AUTH_JWKS_URL` or `AUTH_PUBLIC_KEY` (PEM or JWK), with `AUTH_ISSUER` and `AUTH_AUDIENCE` required
 * alongside. With none of them set, the process runs with a generated development key.
 */
export const layerConfig: Layer.Layer<AuthConfig, ConfigError.ConfigError> = Layer.effect(
  AuthConfig,
  Effect.gen(function*() {
    const jwks = yield* Config.option(Config.url("AUTH_JWKS_URL"))
    const publicKey = yield* Config.option(Config.string("AUTH_PUBLIC_KEY"))
    if (Option.isNone(jwks) && Option.isNone(publicKey)) {
      const issuer = yield* Config.string("AUTH_ISSUER").pipe(Config.withDefault(devIssuer))
      const audience = yield* Config.string("AUTH_AUDIENCE").pipe(Config.withDefault(devAudience))
      return { keys: { _tag: "Dev" as const }, issuer, audience }
    }
    const issuer = yield* Config.string("AUTH_ISSUER")
    const audience = yield* Config.string("AUTH_AUDIENCE")
    if (Option.isSome(jwks)) return { keys: { _tag: "Jwks" as const, url: jwks.value }, issuer, audience }
    const key = yield* Effect.try({
      try: () => parsePublicKey(Option.getOrThrow(publicKey)),
      catch: (e) => e
    }).pipe(Effect.orDieWith((e) => new Error(`AUTH_PUBLIC_KEY is not a PEM or JWK public key: ${e}`)))
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

const Claims = Schema.Struct({
  tenant_id: TenantId,
  sub: UserId,
  role: Schema.optionalWith(Role, { default: () => "member" as const })
})
const decodeClaims = Schema.decodeUnknownEither(Claims)

/** Verifies bearer tokens into principals. */
export class TokenVerifier extends Context.Tag("@altan/integrator/TokenVerifier")<TokenVerifier, {
  readonly verify: (token: string) => Effect.Effect<Principal, Unauthorized>
}>() {}

const reject = (message: string) => new Unauthorized({ message })

const describe = (error: unknown): string => {
  if (error instanceof jose.errors.JWTExpired) return "the token has expired"
  if (error instanceof jose.errors.JWTClaimValidationFailed) return `the token's "${error.claim}" claim is not accepted`
  if (error instanceof jose.errors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted"
  if (error instanceof jose.errors.JWSSignatureVerificationFailed) return "the token's signature does not verify"
  if (error instanceof jose.errors.JWKSNoMatchingKey) return "no key matches the token's kid"
  if (
    error instanceof jose.errors.JWKSTimeout ||
    error instanceof jose.errors.JOSEError && error.code === "ERR_JWKS_INVALID"
  ) {
    return "the key set could not be fetched"
  }
  return "the token is malformed or not signed by a trusted key"
}

export const make = (options: {
  readonly key: jose.JWTVerifyGetKey | KeyObject | jose.CryptoKey
  readonly issuer: string
  readonly audience: string
}): TokenVerifier["Type"] => ({
  verify: (token) =>
    Effect.gen(function*() {
      if (token.length === 0) return yield* reject("missing bearer token")
      if (token.length > maxTokenLength) return yield* reject("the token is too long")
      const { payload } = yield* Effect.tryPromise({
        try: () =>
          jose.jwtVerify(token, options.key as any, {
            issuer: options.issuer,
            audience: options.audience,
            algorithms,
            clockTolerance: 30,
            requiredClaims: ["exp", "sub"]
          }),
        catch: (e) => reject(describe(e))
      })
      const claims = decodeClaims(payload)
      if (claims._tag === "Left") {
        return yield* reject(
          typeof payload.tenant_id === "string"
            ? "the token's tenant_id, sub or role claim is invalid"
            : "the token has no tenant_id claim"
        )
      }
      return new Principal({ tenantId: claims.right.tenant_id, userId: claims.right.sub, role: claims.right.role })
    }).pipe(Effect.withSpan("TokenVerifier.verify"))
})

/**
 * The verifier for the configured key source. A remote key set is cached by jose; an unknown `kid`
 * refetches it at most once per cooldown, so a flood of forged kids cannot hammer the issuer.
 */
export const layer: Layer.Layer<TokenVerifier, never, AuthConfig | DevIssuer> = Layer.effect(
  TokenVerifier,
  Effect.gen(function*() {
    const config = yield* AuthConfig
    const key = config.keys._tag === "Jwks"
      ? jose.createRemoteJWKSet(config.keys.url, {
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
        timeoutDuration: 5_000
      })
      : config.keys._tag === "PublicKey"
      ? config.keys.key
      : (yield* DevIssuer).publicKey
    return make({ key, issuer: config.issuer, audience: config.audience })
  })
)

/** The `Authentication` middleware of the public API: bearer token -> `CurrentPrincipal`. */
export const AuthenticationLive: Layer.Layer<Authentication, never, TokenVerifier> = Layer.effect(
  Authentication,
  Effect.map(TokenVerifier, (verifier) => ({ bearer: (token) => verifier.verify(Redacted.value(token)) }))
)
