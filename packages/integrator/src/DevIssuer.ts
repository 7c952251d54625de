import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as jose from "jose"
import { AuthConfig } from "./AuthConfig.js"

/** The tenant of the admin token printed at start with the development key. */
export const devTenant = "demo"

/** The development signing key of the embedded default; it exists only when no real key is configured. */
export class DevIssuer extends Context.Tag("@altan/integrator/DevIssuer")<DevIssuer, {
  readonly publicKey: jose.CryptoKey
  readonly issue: (
    claims: { tenant_id: string; sub: string; role?: "admin" | "member" },
    ttl?: string
  ) => Effect.Effect<string>
}>() {}

/** A key pair generated at start; tokens it issues name the configured issuer and audience. */
export const layer: Layer.Layer<DevIssuer, never, AuthConfig> = Layer.effect(
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
