import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { createPublicKey, type KeyObject } from "node:crypto"
import { algorithms, algorithmsOf } from "./internal/keyAlgorithms.js"

/** Where verification keys come from and which issuer/audience tokens must name. */
export class AuthConfig extends Context.Tag("@altan/integrator/AuthConfig")<AuthConfig, {
  /**
   * `Jwks`: the issuer's key set, fetched and cached (`AUTH_JWKS_URL`); `PublicKey`: one key (`AUTH_PUBLIC_KEY`);
   * `Dev`: a key generated at start by the `DevIssuer`, for development only.
   */
  readonly keys:
    | { readonly _tag: "Jwks"; readonly url: URL }
    | { readonly _tag: "PublicKey"; readonly key: KeyObject }
    | { readonly _tag: "Dev" }
  /** `AUTH_ISSUER`: the `iss` every token must carry. */
  readonly issuer: string
  /** `AUTH_AUDIENCE`: an `aud` every token must carry. */
  readonly audience: string
}>() {}

export const devIssuer = "altan-dev"
export const devAudience = "altan"

/** With no key configured: the development key, its issuer and audience. */
export const defaults: AuthConfig["Type"] = { keys: { _tag: "Dev" }, issuer: devIssuer, audience: devAudience }

export const layer = (options?: Partial<AuthConfig["Type"]>): Layer.Layer<AuthConfig> =>
  Layer.succeed(AuthConfig, { ...defaults, ...options })

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
      // the container image runs with NODE_ENV=production: a bare `docker run` must not mint and log an admin token
      if ((yield* Config.string("NODE_ENV").pipe(Config.withDefault(""))) === "production") {
        return yield* invalid(
          "AUTH_JWKS_URL",
          "NODE_ENV=production needs AUTH_JWKS_URL or AUTH_PUBLIC_KEY (with AUTH_ISSUER and AUTH_AUDIENCE): the " +
            "generated development key, and the admin token it prints, are for development only"
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
