import type { LlmConfig } from "@altan/domain/LlmConfig"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { createServer } from "node:http"
import { devTenant } from "./DevIssuer.js"
import * as DemoModel from "./internal/demoModel.js"
import { TenantConfig, withOperatorLlms } from "./TenantConfig.js"

/** The id under which every tenant finds the demo model. */
export const llmId = "demo"

/** What every answer of the demo model starts with. */
export const marker = DemoModel.marker

/** Whether the embedded runtime offers the demo model. */
export class DemoLlmConfig extends Context.Tag("@altan/integrator/DemoLlmConfig")<DemoLlmConfig, {
  /**
   * `DEMO_LLM=1`: a scripted stand-in for an LLM answers on loopback and every tenant may use it as LLM `demo`, so
   * natural-language tasks run with no key and no network. Off by default, and refused with any setting of a real
   * deployment (see `config`).
   */
  readonly enabled: boolean
}>() {}

export const defaults: DemoLlmConfig["Type"] = { enabled: false }

export const layer = (options?: Partial<DemoLlmConfig["Type"]>): Layer.Layer<DemoLlmConfig> =>
  Layer.succeed(DemoLlmConfig, { ...defaults, ...options })

/**
 * `DEMO_LLM` (a boolean, default off). It is refused, so the process does not start, together with any setting of a
 * real deployment: `ROLE` other than `all` or a `DATABASE_URL` (a cluster: the model would answer on one runner's
 * loopback only), `AUTH_JWKS_URL` or `AUTH_PUBLIC_KEY` (real tokens, so real tenants), or `NODE_ENV=production`
 * (the container image).
 */
export const config: Config.Config<DemoLlmConfig["Type"]> = Config.all({
  enabled: Config.boolean("DEMO_LLM").pipe(
    Config.withDefault(defaults.enabled),
    Config.withDescription("Offer the scripted demo model as LLM `demo` (embedded runtime, development only).")
  ),
  role: Config.string("ROLE").pipe(Config.withDefault("all")),
  databaseUrl: Config.option(Config.string("DATABASE_URL")),
  jwksUrl: Config.option(Config.string("AUTH_JWKS_URL")),
  publicKey: Config.option(Config.string("AUTH_PUBLIC_KEY")),
  nodeEnv: Config.string("NODE_ENV").pipe(Config.withDefault(""))
}).pipe(
  Config.mapOrFail(({ databaseUrl, enabled, jwksUrl, nodeEnv, publicKey, role }) => {
    const production = [
      ...(role !== "all" ? [`ROLE=${role}`] : []),
      ...(Option.isSome(databaseUrl) ? ["DATABASE_URL"] : []),
      ...(Option.isSome(jwksUrl) ? ["AUTH_JWKS_URL"] : []),
      ...(Option.isSome(publicKey) ? ["AUTH_PUBLIC_KEY"] : []),
      ...(nodeEnv === "production" ? ["NODE_ENV=production"] : [])
    ]
    return enabled && production.length > 0
      ? Either.left(ConfigError.InvalidData(
        ["DEMO_LLM"],
        `DEMO_LLM=1 (the scripted demo model, not a real LLM) is for trying Altan on one machine and is refused ` +
          `with ${production.join(", ")}: unset DEMO_LLM, or run the embedded runtime (ROLE=all, no DATABASE_URL, ` +
          `no AUTH_JWKS_URL or AUTH_PUBLIC_KEY, NODE_ENV not production)`
      ))
      : Either.right({ enabled })
  })
)

export const layerConfig: Layer.Layer<DemoLlmConfig, ConfigError.ConfigError> = Layer.effect(DemoLlmConfig, config)

/** The running demo model: its OpenAI-compatible endpoint on loopback, as the LLM configuration every tenant sees. */
export class DemoLlm extends Context.Tag("@altan/integrator/DemoLlm")<DemoLlm, {
  /** `127.0.0.1:<port>`: the one host the LLM calls' egress guard must let through. */
  readonly host: string
  readonly llm: LlmConfig
}>() {}

/** Answers `POST .../chat/completions` with the script's next move; nothing else. */
const app = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (request.method !== "POST" || !new URL(request.url, "http://demo").pathname.endsWith("/chat/completions")) {
    return HttpServerResponse.unsafeJson({ error: { message: "not found" } }, { status: 404 })
  }
  const body = yield* Effect.either(request.json)
  return Either.match(Either.flatMap(Either.mapLeft(body, () => "the body is not JSON"), DemoModel.complete), {
    onLeft: (message) =>
      HttpServerResponse.unsafeJson({ error: { message, type: "invalid_request_error" } }, { status: 400 }),
    onRight: (completion) => HttpServerResponse.unsafeJson(completion)
  })
})

/**
 * The demo model, served on a free loopback port of this process (never any other interface) in the OpenAI
 * chat-completions protocol, so its turns take the real path: the agent loop, the tenant's `Connection`, the
 * gateway's `openai` client and the egress guard. It holds no secret and no state.
 */
export const layerServer: Layer.Layer<DemoLlm> = Layer.scoped(
  DemoLlm,
  Effect.gen(function*() {
    const server = yield* NodeHttpServer.make(() => createServer(), { port: 0, host: "127.0.0.1" })
    yield* server.serve(app)
    const { port } = server.address as HttpServer.TcpAddress
    const host = `127.0.0.1:${port}`
    return {
      host,
      llm: { llm_id: llmId, endpoint: `http://${host}/v1/chat/completions`, auth: { type: "none" }, model: "demo" }
    }
  })
).pipe(Layer.orDie)

/**
 * Tenant configuration with the demo model offered to every tenant as LLM `demo` (never stored; a tenant's own LLM
 * of that id wins), and as the default LLM of the development tenant while its settings name none. Any other tenant
 * uses it only by asking: `"llm_id": "demo"` on a task, or `default_llm` in its settings.
 */
export const offer = (demo: DemoLlm["Type"]) =>
  Layer.updateService(
    TenantConfig,
    (config: TenantConfig["Type"]) =>
      withOperatorLlms(config, { llms: [demo.llm], defaultLlm: { llmId, tenants: [devTenant] } })
  )

/** What `npm start` prints when the demo model is on, for the API at `url`. */
export const bannerOf = (url: string) =>
  [
    `Demo model on (DEMO_LLM=1): LLM "${llmId}" is a scripted stand-in, not a real LLM, and its answers start with ` +
    `"${marker.trim()}". It is tenant "${devTenant}"'s default LLM; other tenants pass "llm_id": "${llmId}". Try:`,
    ``,
    `curl -s ${url}/v1/tasks -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\`,
    `  -d '{"input": "Use a template to say hello to Ada"}'`
  ].join("\n")
