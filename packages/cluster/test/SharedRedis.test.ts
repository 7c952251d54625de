import * as AgentService from "@altan/agent/AgentService"
import { EventLog } from "@altan/agent/EventLog"
import { TaskStore } from "@altan/agent/TaskStore"
import type { TaskId, TenantId } from "@altan/domain/Ids"
import { ConnectionStore } from "@altan/integrator/ConnectionStore"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import { OAuthStore } from "@altan/integrator/OAuth"
import { SecretStore } from "@altan/integrator/SecretStore"
import { TenantConfig } from "@altan/integrator/TenantConfig"
import * as Redis from "@altan/redis/Redis"
import { ExecutionLedger } from "@altan/tool/ExecutionLedger"
import { ToolCache } from "@altan/tool/ToolCache"
import { ToolRegistry } from "@altan/tool/ToolRegistry"
import * as ToolService from "@altan/tool/ToolService"
import { expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { randomBytes } from "node:crypto"

/**
 * The stores of every service, chosen as the runtime chooses them, given one Redis layer (what `RedisLive` is for a
 * process): they all run their commands over its one connection, and only the event log's follower opens another,
 * for its blocking `XREAD`. Before the stores shared it, a process held about eight.
 */
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const run = randomBytes(5).toString("hex")
const name = `altan-test-shared-${run}`
const prefix = `test-${run}`
// the tool and integrator stores write under the default prefix: a tenant of the run's own keeps them apart
const tenant = `shared-${run}` as TenantId

const redis = Layer.orDie(Redis.layer({ url, connectionName: name }))
const stores = Layer.mergeAll(
  AgentService.stores(Option.some(redis), prefix),
  ToolService.stores(Option.some(redis)),
  IntegratorService.stores(Option.some(redis))
)
const config = ConfigProvider.fromMap(
  new Map([["SECRETS_BACKEND", "redis"], ["SECRETS_MASTER_KEY", randomBytes(32).toString("base64")]])
)

/** How many connections carry `name`, seen from a connection of the test's own. */
const connections = Effect.gen(function*() {
  const { client } = yield* Redis.Redis
  const list = String(yield* Redis.attempt("CLIENT LIST", () => client.client("LIST")))
  return list.split("\n").filter((line) => line.includes(` name=${name} `)).length
}).pipe(Effect.provide(Redis.layer({ url, connectionName: `${name}-observer` })))

const deleteKeys = (pattern: string) =>
  Effect.flatMap(Redis.Redis, ({ client }) =>
    Effect.promise(async () => {
      const keys = await client.keys(pattern)
      if (keys.length > 0) await client.del(...keys)
    })).pipe(Effect.provide(Redis.layer({ url })), Effect.orDie)

it.live("every store of a process shares its one Redis connection", () =>
  Effect.gen(function*() {
    const taskId = "s1.t1" as TaskId
    // one command through each store
    yield* Effect.flatMap(EventLog, (log) =>
      log.append(tenant, taskId, { type: "task.queued", task_id: taskId, at: new Date().toISOString() }))
    yield* Effect.flatMap(TaskStore, (store) =>
      store.get(tenant, taskId))
    yield* Effect.flatMap(ToolRegistry, (registry) => registry.list(tenant))
    yield* Effect.flatMap(ToolCache, (cache) => cache.set(`${tenant}:probe`, { ok: true }))
    yield* Effect.flatMap(ExecutionLedger, (ledger) => ledger.read(tenant, "probe", "k"))
    yield* Effect.flatMap(TenantConfig, (config) => config.getSettings(tenant))
    yield* Effect.flatMap(ConnectionStore, (connections) => connections.list(tenant))
    yield* Effect.flatMap(OAuthStore, (oauth) => oauth.getStatus(tenant, "slack"))
    yield* Effect.flatMap(SecretStore, (secrets) => secrets.put(tenant, "probe", Redacted.make("v")))
    expect(yield* Effect.flatMap(SecretStore, (secrets) => secrets.get(tenant, "probe"))).toEqual(
      Option.some(Redacted.make("v"))
    )

    // the shared connection and the event log's follower connection
    expect(yield* connections).toBe(2)
  }).pipe(
    Effect.provide(stores),
    Effect.withConfigProvider(config),
    Effect.ensuring(Effect.andThen(deleteKeys(`${prefix}:*`), deleteKeys(`altan:*${tenant}*`)))
  ))
