import { Redis } from "@altan/redis/Redis"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Admission from "./Admission.js"
import * as AuthConfig from "./AuthConfig.js"
import { ConnectionLive } from "./Connection.js"
import * as ConnectionStore from "./ConnectionStore.js"
import * as DemoLlm from "./DemoLlm.js"
import * as DevIssuer from "./DevIssuer.js"
import * as EdgeServer from "./EdgeServer.js"
import { HttpEdgeLive } from "./HttpEdge.js"
import * as IntegratorConfig from "./IntegratorConfig.js"
import * as LlmGateway from "./LlmGateway.js"
import * as OAuth from "./OAuth.js"
import * as Resilience from "./Resilience.js"
import * as SecretStore from "./SecretStore.js"
import * as SecretStoreConfig from "./SecretStoreConfig.js"
import * as TenantConfig from "./TenantConfig.js"
import * as TokenVerifier from "./TokenVerifier.js"
import * as UsageMeter from "./UsageMeter.js"

/**
 * The integrator's stores: with `redis`, tenant configuration, connections, OAuth2 state and spend counts live in it,
 * so every integrator runner shares them; secrets follow `SECRETS_BACKEND`.
 */
export const stores = <R = never>(redis: Option.Option<Layer.Layer<Redis, never, R>>) =>
  Layer.merge(
    Option.match(redis, {
      onNone: () =>
        Layer.mergeAll(
          TenantConfig.layerMemory,
          ConnectionStore.layerMemory,
          OAuth.layerMemory,
          UsageMeter.layerMemory
        ),
      onSome: (redis) =>
        Layer.mergeAll(
          TenantConfig.layerRedis(),
          ConnectionStore.layerRedis(),
          OAuth.layerRedis(),
          UsageMeter.layerRedis()
        ).pipe(
          Layer.provide(redis)
        )
    }),
    SecretStoreConfig.layerFromConfig(redis)
  ).pipe(Layer.orDie)

/** Every integrator store in process memory, secrets included: for tests, where the edge and the connections share them. */
export const storesMemory = Layer.mergeAll(
  TenantConfig.layerMemory,
  SecretStore.layerMemory,
  ConnectionStore.layerMemory,
  OAuth.layerMemory,
  UsageMeter.layerMemory
)

/** Prints where the API listens and, with the generated development key, a ready admin token. */
const banner = Layer.effectDiscard(Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  const address = server.address
  const url = address._tag === "TcpAddress"
    ? `http://${
      address.hostname === "0.0.0.0" || address.hostname === "::" ? "localhost" : address.hostname
    }:${address.port}`
    : address.path
  const auth = yield* AuthConfig.AuthConfig
  yield* Effect.logInfo(`Altan API listening on ${url} (docs: ${url}/docs)`)
  if (auth.keys._tag === "Dev") {
    const issuer = yield* DevIssuer.DevIssuer
    const token = yield* issuer.issue({ tenant_id: DevIssuer.devTenant, sub: "admin", role: "admin" })
    // on stderr with the logs (stdout is the audit log's): it is what `npm start` users copy into curl
    yield* Effect.sync(() =>
      console.error(
        `\nDevelopment admin token for tenant "${DevIssuer.devTenant}" (valid 30 days):\n\nexport TOKEN=${token}\n\n` +
          `Console: ${url}/console#token=${token}\n`
      )
    )
  }
  if (Option.isSome(yield* Effect.serviceOption(DemoLlm.DemoLlm))) {
    yield* Effect.sync(() => console.error(`${DemoLlm.bannerOf(url)}\n`))
  }
}))

/**
 * The Integrator Engine as configured: `Connection` entities (`TOOL_*`/`BREAKER_*` retries, the LLM gateway's
 * `LLM_*`) and the public HTTP API on `host` and `PORT` (`AUTH_*`, admission and body limits), its stores in the
 * process's `Redis` when it has one. The egress guard and the readiness checks are the process's, given by the caller;
 * so is the demo model (`DemoLlm`), offered to every tenant when the caller runs one.
 */
export const layer = (options: { readonly host: string }) =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const http = yield* IntegratorConfig.config
    const redis = yield* Effect.serviceOption(Redis)
    const demo = yield* Effect.serviceOption(DemoLlm.DemoLlm)
    const integrator = Layer.mergeAll(
      ConnectionLive,
      HttpEdgeLive.pipe(
        Layer.provide(TokenVerifier.layer),
        Layer.provide(Layer.orDie(Admission.layerConfig)),
        Layer.provideMerge(NodeHttpServer.layer(EdgeServer.make, { port: http.port, host: options.host })),
        Layer.provide(IntegratorConfig.layer(http))
      )
    ).pipe(
      Layer.provide(LlmGateway.layer.pipe(Layer.provide(LlmGateway.layerConfig))),
      Layer.provide(Layer.orDie(Resilience.layerConfig))
    )
    return (Option.isSome(demo) ? DemoLlm.offer(demo.value)(integrator) : integrator).pipe(
      Layer.provide(stores(Option.map(redis, (client) => Layer.succeed(Redis, client))))
    )
  })).pipe(
    (integrator) => Layer.provideMerge(banner, integrator),
    Layer.provideMerge(DevIssuer.layer),
    Layer.provideMerge(AuthConfig.layerConfig)
  )

/**
 * `Connection` entities for tests: the given LLM and retry settings (fast backoff by default keeps retry tests quick;
 * the policy is the production one). The stores and the egress guard come from the test, shared with its edge.
 */
export const layerTest = (options: {
  readonly llm?: Partial<LlmGateway.LlmGatewayConfig["Type"]> | undefined
  readonly resilience?: Partial<Resilience.ResilienceConfig["Type"]> | undefined
} = {}) =>
  ConnectionLive.pipe(
    Layer.provide(LlmGateway.layer.pipe(Layer.provide(LlmGateway.layerConfigValue(options.llm)))),
    Layer.provide(Resilience.layer({ baseDelay: Duration.millis(20), ...options.resilience }))
  )
