import { Redis } from "@altan/redis/Redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as AgentConfig from "./AgentConfig.js"
import { AgentSessionLive } from "./AgentSession.js"
import * as EventLog from "./EventLog.js"
import * as TaskStore from "./TaskStore.js"
import { TenantTasksLive } from "./TenantTasks.js"

/** The agent's entities: sessions, and the tenant-wide reads. */
const entities = Layer.merge(AgentSessionLive, TenantTasksLive)

/** Where tasks, conversations and event logs live: in `redis` when given (keys under `prefix`), else process memory. */
export const stores = <R = never>(redis: Option.Option<Layer.Layer<Redis, never, R>>, prefix = "altan") =>
  Option.match(redis, {
    onNone: () => TaskStore.layerMemory().pipe(Layer.provideMerge(EventLog.layerMemory())),
    onSome: (redis) =>
      Layer.mergeAll(TaskStore.layerRedis({ prefix }), EventLog.layerRedis({ prefix })).pipe(
        Layer.provide(redis),
        Layer.orDie
      )
  })

/**
 * The Agent Service as configured: `AgentSession` and `TenantTasks` entities with the `AGENT_*` settings, their stores in the process's
 * `Redis` when it has one (`REDIS_URL`), else in memory.
 */
export const layer = Layer.unwrapEffect(Effect.map(Effect.serviceOption(Redis), (redis) =>
  entities.pipe(
    Layer.provide(stores(Option.map(redis, (client) => Layer.succeed(Redis, client)))),
    Layer.provide(AgentConfig.layerConfig)
  )))

/** The Agent Service for tests: the given settings; memory stores, or `redis`'s under `prefix`. */
export const layerTest = (options: {
  readonly config?: Partial<AgentConfig.AgentConfig["Type"]> | undefined
  readonly redis?: { readonly layer: Layer.Layer<Redis>; readonly prefix: string } | undefined
} = {}) =>
  entities.pipe(
    Layer.provide(stores(Option.map(Option.fromNullable(options.redis), (r) => r.layer), options.redis?.prefix)),
    Layer.provide(AgentConfig.layer(options.config))
  )
