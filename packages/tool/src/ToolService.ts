import type { Egress as EgressTag } from "@altan/domain/Egress"
import { Redis } from "@altan/redis/Redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Egress from "./Egress.js"
import { EgressConfig } from "./EgressConfig.js"
import * as ExecutionLedger from "./ExecutionLedger.js"
import * as PureTools from "./PureTools.js"
import type { Tool } from "./Tool.js"
import * as ToolCache from "./ToolCache.js"
import * as ToolRegistry from "./ToolRegistry.js"
import { ToolWorkerLive } from "./ToolWorker.js"

/**
 * Where tenant tools, the response cache and the execution ledger live: in `redis` when given, so every tool runner
 * sees them (and a runner taking over a dead one's tools knows what it started); else process memory.
 */
export const stores = <R = never>(
  redis: Option.Option<Layer.Layer<Redis, never, R>>,
  options: {
    readonly prefix?: string | undefined
    readonly extra?: ReadonlyArray<Tool> | undefined
    /** A ledger of the caller's own instead of the chosen one (tests that set it up themselves). */
    readonly ledger?: Layer.Layer<ExecutionLedger.ExecutionLedger> | undefined
  } = {}
) =>
  Option.match(redis, {
    onNone: () =>
      Layer.mergeAll(
        ToolRegistry.layerMemory({ extra: options.extra }),
        ToolCache.layerMemory(),
        options.ledger ?? ExecutionLedger.layerMemory()
      ),
    onSome: (redis) =>
      Layer.mergeAll(
        ToolRegistry.layerRedis({ ...(options.prefix ? { prefix: options.prefix } : {}), extra: options.extra }),
        ToolCache.layerRedis(options.prefix ? { prefix: options.prefix } : undefined),
        options.ledger ?? ExecutionLedger.layerRedis(options.prefix ? { prefix: options.prefix } : undefined)
      ).pipe(Layer.provide(redis))
  })

/**
 * The one guarded HTTP client of a process (`EGRESS_*` settings): the tools and the integrator's LLM and OAuth calls
 * go out through it. A layer is built once per process however many services it is provided to.
 */
export const egress = Egress.layer.pipe(Layer.provide(EgressConfig.layerConfig), Layer.orDie)

/** The pure built-in tools, which the Agent Service runs in its own process (see `PureTools` in the domain). */
export const pureTools = PureTools.layer

/** The Tool Service as configured: `ToolWorker` entities, their stores in the process's `Redis` when it has one. */
export const layer = Layer.unwrapEffect(Effect.map(Effect.serviceOption(Redis), (redis) =>
  ToolWorkerLive.pipe(
    Layer.provide(stores(Option.map(redis, (client) => Layer.succeed(Redis, client)))),
    Layer.provide(egress)
  )))

/**
 * The Tool Service for tests: loopback reachable through the guard (`egressAllow`, as an operator would allow it),
 * `extra` tools beside the built-ins, memory stores or `redis`'s under `prefix`, or a ledger of the test's own.
 */
export const layerTest = (options: {
  readonly egressAllow?: ReadonlyArray<string> | undefined
  /** The guard to share with other services under test (one per process, as in production). */
  readonly egress?: Layer.Layer<EgressTag> | undefined
  readonly extra?: ReadonlyArray<Tool> | undefined
  readonly redis?: { readonly layer: Layer.Layer<Redis>; readonly prefix: string } | undefined
  readonly ledger?: Layer.Layer<ExecutionLedger.ExecutionLedger> | undefined
} = {}) =>
  ToolWorkerLive.pipe(
    Layer.provide(
      stores(Option.map(Option.fromNullable(options.redis), (r) => r.layer), {
        prefix: options.redis?.prefix,
        extra: options.extra,
        ledger: options.ledger
      })
    ),
    Layer.provide(options.egress ?? egressTest(options.egressAllow))
  )

/** The guard with the operator allowlist `allow` (loopback by default, for the fakes tests run). */
export const egressTest = (allow: ReadonlyArray<string> = ["127.0.0.1"]) =>
  Egress.layer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: allow })))
