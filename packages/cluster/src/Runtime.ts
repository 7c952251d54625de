import * as AgentService from "@altan/agent/AgentService"
import * as AuditConfig from "@altan/audit/AuditConfig"
import { Egress as EgressTag } from "@altan/domain/Egress"
import * as Readiness from "@altan/domain/Readiness"
import { readinessProbeId, ToolWorker } from "@altan/domain/ToolWorker"
import * as DemoLlm from "@altan/integrator/DemoLlm"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import * as OperatorServer from "@altan/observability/OperatorServer"
import * as Telemetry from "@altan/observability/Telemetry"
import { TelemetryConfig } from "@altan/observability/TelemetryConfig"
import * as Redis from "@altan/redis/Redis"
import * as MemoryMessageStorage from "@altan/storage/MemoryMessageStorage"
import * as MessageRetention from "@altan/storage/MessageRetention"
import * as Egress from "@altan/tool/Egress"
import { EgressConfig } from "@altan/tool/EgressConfig"
import * as ToolService from "@altan/tool/ToolService"
import type * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { layerConfig, type Role, RuntimeConfig, shardGroups, shardsPerGroup } from "./RuntimeConfig.js"

const shardingOptions = (config: RuntimeConfig["Type"]): Partial<ShardingConfig.ShardingConfig["Type"]> => ({
  runnerAddress: Option.some(RunnerAddress.make(config.host, config.runnerPort)),
  availableShardGroups: shardGroups,
  // SqlRunnerStorage acquires a runner's shards in one statement, and PostgreSQL allows at most 1664
  // entries in it: 100 shards per group keeps even ROLE=all (8 groups) well under that.
  shardsPerGroup,
  assignedShardGroups: config.assignedShardGroups,
  shardLockRefreshInterval: config.shardLockRefreshInterval,
  shardLockExpiration: config.shardLockExpiration,
  runnerHealthCheckInterval: "2 seconds",
  refreshAssignmentsInterval: "1 second",
  // a tool runner shutting down lets the calls it runs finish (the egress guard's 30 s limit, and a margin) rather
  // than cutting them off with an unknown outcome; the others keep the library's 15 s
  ...(config.assignedShardGroups.some((group) => group.startsWith("tool"))
    ? { entityTerminationTimeout: Duration.seconds(35) }
    : {})
})

/**
 * Creates the cluster's tables before the runner starts. Runners starting together race for the
 * migration lock and the losers' storage layers die; retrying here, with jitter, lets them find the
 * tables the winner created.
 */
const migrate = (
  options: Partial<ShardingConfig.ShardingConfig["Type"]>
): Layer.Layer<never, never, SqlClient.SqlClient> =>
  Layer.effectDiscard(
    Layer.build(
      Layer.merge(SqlMessageStorage.layer, SqlRunnerStorage.layer).pipe(Layer.provide(ShardingConfig.layer(options)))
    ).pipe(
      Effect.scoped,
      Effect.sandbox,
      Effect.tapError((cause) =>
        Effect.logWarning(`cluster storage migration failed; retrying: ${Cause.pretty(cause)}`)
      ),
      Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(10)))),
      Effect.unsandbox,
      Effect.orDie
    )
  )

/**
 * Cluster membership: PostgreSQL-backed runners talking over sockets when `DATABASE_URL` is set,
 * otherwise one in-process runner with memory storage (the embedded default).
 */
export const ShardingLive: Layer.Layer<
  Sharding.Sharding | Runners.Runners | MessageStorage.MessageStorage,
  never,
  RuntimeConfig
> = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* RuntimeConfig
  if (Option.isSome(config.databaseUrl)) {
    return NodeClusterSocket.layer({
      storage: "sql",
      runnerHealth: config.runnerHealth,
      runnerHealthK8s: {
        labelSelector: config.runnerPods.labelSelector,
        ...Option.match(config.runnerPods.namespace, { onNone: () => ({}), onSome: (namespace) => ({ namespace }) })
      },
      shardingConfig: shardingOptions(config)
    }).pipe(
      Layer.provide(migrate(shardingOptions(config))),
      Layer.merge(MessageRetention.layerSql(config.messageRetention)),
      Layer.provideMerge(PgClient.layer({ url: config.databaseUrl.value })),
      Layer.orDie
    ) as Layer.Layer<Sharding.Sharding | Runners.Runners | MessageStorage.MessageStorage>
  }
  if (config.role !== "all") {
    return Layer.die(new Error(`ROLE=${config.role} runs one service of a cluster and needs DATABASE_URL`))
  }
  // One process: no message ever leaves it, so skip simulating the wire (tests keep it on).
  return MessageRetention.layerMemory(config.messageRetention).pipe(
    Layer.provideMerge(ShardingMemory({ ...shardingOptions(config), simulateRemoteSerialization: false }))
  )
}))

/** One in-process runner hosting every shard group, with indexed memory storage (persisted messages included). */
export const ShardingMemory = (
  options?: Partial<ShardingConfig.ShardingConfig["Type"]>
): Layer.Layer<
  Sharding.Sharding | Runners.Runners | MessageStorage.MessageStorage | MemoryMessageStorage.MemoryMessageStorage
> =>
  Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(MemoryMessageStorage.layer),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(
      ShardingConfig.layer({
        availableShardGroups: shardGroups,
        assignedShardGroups: shardGroups,
        shardsPerGroup,
        ...options
      })
    )
  )

/**
 * The process's one Redis connection, from `REDIS_URL`: every store and the readiness check share it (a layer is
 * built once per process, however many layers it is provided to). Provided only where `REDIS_URL` is set.
 */
export const RedisLive: Layer.Layer<Redis.Redis, never, RuntimeConfig> = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* RuntimeConfig
  const url = yield* config.redisUrl
  return Redis.layer({ url: Redacted.value(url), connectionName: TelemetryConfig.serviceNameOf(config.role) })
})).pipe(Layer.orDie)

/** The process's Redis when `REDIS_URL` is set. */
const redisOf = (config: RuntimeConfig["Type"]) => Option.map(config.redisUrl, () => RedisLive)

/**
 * A message through the cluster and back: the tool catalog of a reserved tenant id (`_` cannot
 * start a real tenant's id), so readiness means entities are being delivered, not just that the process runs.
 */
export const clusterRoundTrip = Effect.map(ToolWorker.client, (workers) =>
  workers(readinessProbeId).List().pipe(
    Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => ({ _tag: "no answer in 2 s" }) }),
    Effect.asVoid,
    Effect.mapError((e) => e._tag)
  ))

/** What `/readyz` checks: the cluster's storage when there is one, and the process's Redis when configured. */
const ReadinessLive = Layer.unwrapEffect(Effect.map(RuntimeConfig, (config) =>
  Layer.effect(
    Readiness.Readiness,
    Effect.gen(function*() {
      const sql = yield* Effect.serviceOption(SqlClient.SqlClient)
      const redis = yield* Effect.serviceOption(Redis.Redis)
      const checks: Array<readonly [string, Effect.Effect<void, string>]> = Option.isSome(sql)
        ? [["cluster_storage", sql.value`SELECT 1`.pipe(Effect.asVoid, Effect.mapError((e) => e.message))]]
        : [["cluster", yield* clusterRoundTrip]]
      if (Option.isSome(redis)) checks.push(["redis", Effect.mapError(redis.value.ping, (e) => e.message)])
      return { checks }
    })
  ).pipe(Layer.provide(Option.getOrElse(redisOf(config), () => Layer.empty)))))

/**
 * The demo model of `DEMO_LLM=1` on a loopback port, and an egress guard for the integrator that lets its LLM calls
 * reach that port, as `EGRESS_ALLOW_HOSTS` would: the guard of the tools stays as configured.
 */
export const DemoLlmLive: Layer.Layer<DemoLlm.DemoLlm | EgressTag> = Layer.unwrapEffect(
  Effect.map(DemoLlm.DemoLlm, (demo) =>
    // a guard of its own (`Egress.layer` is the tools' one: a layer is built once per process)
    Layer.scoped(
      EgressTag,
      Effect.flatMap(Effect.orDie(EgressConfig.config), (settings) =>
        Egress.make({ ...settings, operatorAllowHosts: [...settings.operatorAllowHosts, demo.host] }))
    ))
).pipe(Layer.provideMerge(DemoLlm.layerServer))

/** Each role's service, on the process's Redis (when configured), egress guard and readiness checks. */
const services = (
  config: RuntimeConfig["Type"],
  demo: DemoLlm.DemoLlmConfig["Type"]
): Record<Exclude<Role, "all">, Layer.Layer<never, any, any>> => ({
  agent: AgentService.layer.pipe(Layer.provide(ToolService.pureTools)),
  tool: ToolService.layer,
  integrator: IntegratorService.layer({ host: config.httpHost }).pipe(
    Layer.provide(ReadinessLive),
    Layer.provide(demo.enabled ? DemoLlmLive : ToolService.egress)
  )
})

/** The services of this process's role on top of cluster membership. */
export const RuntimeLive: Layer.Layer<never> = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* RuntimeConfig
  const demo = yield* DemoLlm.DemoLlmConfig
  const roles: ReadonlyArray<Exclude<Role, "all">> = config.role === "all"
    ? ["agent", "tool", "integrator"]
    : [config.role]
  const operator = OperatorServer.layer(config.httpHost).pipe(Layer.provide(ReadinessLive))
  // one audit trail per process, shared by every service it runs; telemetry first, so everything records into it
  return Layer.mergeAll(operator, ...roles.map((role) => services(config, demo)[role])).pipe(
    // the process's one Redis connection, for the stores of every service it runs
    Layer.provide(Option.getOrElse(redisOf(config), () => Layer.empty)),
    Layer.provide(ShardingLive),
    Layer.provide(Layer.orDie(AuditConfig.layerFromConfig)),
    Layer.provide(Telemetry.layer),
    Layer.provide(Layer.orDie(TelemetryConfig.layerConfig(config.role)))
  ) as Layer.Layer<
    never,
    never,
    RuntimeConfig
  >
})).pipe(Layer.provide(Layer.merge(layerConfig, DemoLlm.layerConfig)), Layer.orDie)
