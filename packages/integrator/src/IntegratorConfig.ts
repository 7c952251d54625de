import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/** The public HTTP edge. */
export class IntegratorConfig extends Context.Tag("@altan/integrator/IntegratorConfig")<IntegratorConfig, {
  /** `PORT`: where the public API listens. */
  readonly port: number
  /** `MAX_BODY_BYTES`: larger request bodies are refused with 413. */
  readonly maxBodyBytes: number
  /**
   * `MAX_JSON_DEPTH`: request bodies whose JSON nests deeper (objects and arrays) are refused with 400 before
   * anything parses them; decoding and error messages recurse per level.
   */
  readonly maxJsonDepth: number
  /**
   * `OAUTH_REDIRECT_URL`: the public URL of `/v1/oauth/callback`, as registered with providers' OAuth
   * apps. Unset: derived from the request (its `Host`, or `X-Forwarded-Host`/`-Proto` behind a proxy).
   */
  readonly oauthRedirectUrl: Option.Option<string>
  /**
   * `MCP_SCOPES` (space-separated): the scopes `/.well-known/oauth-protected-resource` names for `/mcp`, which MCP
   * clients ask the authorization server (`AUTH_ISSUER`) for. Default `openid`.
   */
  readonly mcpScopes: ReadonlyArray<string>
}>() {}

export const defaults: IntegratorConfig["Type"] = {
  port: 8080,
  maxBodyBytes: 1024 * 1024,
  maxJsonDepth: 64,
  oauthRedirectUrl: Option.none(),
  mcpScopes: ["openid"]
}

export const layer = (options?: Partial<IntegratorConfig["Type"]>): Layer.Layer<IntegratorConfig> =>
  Layer.succeed(IntegratorConfig, { ...defaults, ...options })

export const config: Config.Config<IntegratorConfig["Type"]> = Config.all({
  port: Config.port("PORT").pipe(Config.withDefault(defaults.port), Config.withDescription("HTTP port of the API.")),
  maxBodyBytes: Config.integer("MAX_BODY_BYTES").pipe(
    Config.withDefault(defaults.maxBodyBytes),
    Config.withDescription("Largest accepted request body, in bytes.")
  ),
  maxJsonDepth: Config.integer("MAX_JSON_DEPTH").pipe(
    Config.withDefault(defaults.maxJsonDepth),
    Config.validate({ message: "MAX_JSON_DEPTH must be at least 1", validation: (n) => n >= 1 }),
    Config.withDescription("Deepest accepted nesting of objects and arrays in a JSON request body.")
  ),
  oauthRedirectUrl: Config.option(Config.url("OAUTH_REDIRECT_URL")).pipe(
    Config.map(Option.map((url) => url.href)),
    Config.withDescription("Public URL of /v1/oauth/callback.")
  ),
  mcpScopes: Config.string("MCP_SCOPES").pipe(
    Config.map((s) => s.split(/\s+/).filter((scope) => scope.length > 0)),
    Config.withDefault(defaults.mcpScopes),
    Config.withDescription("Scopes named for /mcp in its protected-resource metadata, space-separated.")
  )
})

export const layerConfig: Layer.Layer<IntegratorConfig, ConfigError.ConfigError> = Layer.effect(
  IntegratorConfig,
  Effect.gen(function*() {
    return yield* config
  })
)
