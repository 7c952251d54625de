import { toolShardGroups } from "@altan/domain/ToolWorker"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"

export const roles = ["all", "agent", "tool", "integrator"] as const
export type Role = typeof roles[number]

/**
 * The shard groups of the three services, and the cluster's own `default` group, where the library runs its
 * singletons (the runner health check among them); every runner knows all of them.
 */
export const shardGroups: ReadonlyArray<string> = ["agent", "integrator", ...toolShardGroups, "default"]

/**
 * How this process takes part in the cluster. Read once from the environment (see README's
 * configuration table); every other setting belongs to the service that uses it.
 */
export class RuntimeConfig extends Context.Tag("@altan/cluster/RuntimeConfig")<RuntimeConfig, {
  /** `ROLE`: which services this process runs. */
  readonly role: Role
  /** `SHARD_GROUPS`: overrides the shard groups the role implies (e.g. a tool runner for one vendor). */
  readonly assignedShardGroups: ReadonlyArray<string>
  /** `HOST` / `RUNNER_PORT`: this runner's address as other runners reach it. */
  readonly host: string
  readonly runnerPort: number
  /** `HTTP_HOST`: the interface the public API binds to. */
  readonly httpHost: string
  /** `DATABASE_URL`: PostgreSQL for cluster storage; unset means a single in-memory runner. */
  readonly databaseUrl: Option.Option<Redacted.Redacted>
  /** `REDIS_URL`: sessions, task records and event logs; unset keeps them in process memory. */
  readonly redisUrl: Option.Option<Redacted.Redacted>
  /** `RUNNER_HEALTH`: `ping` other runners, or ask the Kubernetes API (`k8s`). */
  readonly runnerHealth: "ping" | "k8s"
  /**
   * With `k8s`: the namespace whose pods are the runners (`POD_NAMESPACE`, from the downward API) and the label they
   * carry (`RUNNER_POD_SELECTOR`): a namespaced Role can list them, where listing every namespace would be refused.
   */
  readonly runnerPods: { readonly namespace: Option.Option<string>; readonly labelSelector: string }
  /** Cluster timing; identical in every process, or clients keep routing to dead runners. */
  readonly shardLockRefreshInterval: Duration.Duration
  readonly shardLockExpiration: Duration.Duration
  /** `MESSAGE_RETENTION`: processed persisted messages are deleted after this long. */
  readonly messageRetention: Duration.Duration
}>() {}

/** Shards per group; like the groups themselves, the same in every process of a cluster. */
export const shardsPerGroup = 100

/** The groups a role hosts: its service's, and `default` (any runner may run the cluster's singletons). */
export const groupsOf = (role: Role): ReadonlyArray<string> =>
  role === "all" ? shardGroups : role === "tool" ? [...toolShardGroups, "default"] : [role, "default"]

export const load: Effect.Effect<RuntimeConfig["Type"], ConfigError.ConfigError> = Effect.gen(function*() {
  const role = yield* Config.literal(...roles)("ROLE").pipe(Config.withDefault("all" as const))
  const assigned = yield* Config.option(Config.array(Config.string(), "SHARD_GROUPS"))
  return {
    role,
    assignedShardGroups: Option.getOrElse(assigned, () => groupsOf(role)),
    host: yield* Config.string("HOST").pipe(Config.withDefault("127.0.0.1")),
    runnerPort: yield* Config.port("RUNNER_PORT").pipe(Config.withDefault(34431)),
    httpHost: yield* Config.string("HTTP_HOST").pipe(Config.withDefault("0.0.0.0")),
    databaseUrl: yield* Config.option(Config.redacted("DATABASE_URL")),
    redisUrl: yield* Config.option(Config.redacted("REDIS_URL")),
    runnerHealth: yield* Config.literal("ping", "k8s")("RUNNER_HEALTH").pipe(Config.withDefault("ping" as const)),
    runnerPods: {
      namespace: yield* Config.option(Config.string("POD_NAMESPACE")),
      labelSelector: yield* Config.string("RUNNER_POD_SELECTOR").pipe(
        Config.withDefault("app.kubernetes.io/part-of=altan")
      )
    },
    shardLockRefreshInterval: yield* Config.duration("SHARD_LOCK_REFRESH_INTERVAL").pipe(
      Config.withDefault(Duration.seconds(2))
    ),
    shardLockExpiration: yield* Config.duration("SHARD_LOCK_EXPIRATION").pipe(Config.withDefault(Duration.seconds(6))),
    messageRetention: yield* Config.duration("MESSAGE_RETENTION").pipe(Config.withDefault(Duration.hours(1)))
  }
})

export const layerConfig: Layer.Layer<RuntimeConfig, ConfigError.ConfigError> = Layer.effect(RuntimeConfig, load)
