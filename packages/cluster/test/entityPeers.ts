import * as MemorySink from "@altan/audit/MemorySink"
import { Connection } from "@altan/domain/Connection"
import { Egress } from "@altan/domain/Egress"
import { ToolWorker } from "@altan/domain/ToolWorker"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import type * as LlmGateway from "@altan/integrator/LlmGateway"
import type * as Resilience from "@altan/integrator/Resilience"
import type { Tool } from "@altan/tool/Tool"
import * as ToolService from "@altan/tool/ToolService"
import type * as Entity from "@effect/cluster/Entity"
import { makeTestClient } from "@effect/cluster/Entity"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import type * as Rpc from "@effect/rpc/Rpc"
import type * as RpcClient from "@effect/rpc/RpcClient"
import * as RpcSchema from "@effect/rpc/RpcSchema"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"

type TestClients = (entityId: string) => Effect.Effect<Record<string, (...args: Array<unknown>) => unknown>>

/**
 * Entities driven through `Entity.makeTestClient` (their handlers, no sharding, no runner, no storage) that call each
 * other. The test client gives an entity's layer a stand-in Sharding that only registers the entity; its `makeClient`
 * is missing, so a layer that takes `Other.client` at build could not be built. Here `makeClient` answers with
 * clients of the entities `add`ed to the same peers (each a test client itself, found when a message is sent, so the
 * order of `add`s does not matter and an entity may call itself). What a runner adds is absent: persistence,
 * redelivery, mailbox limits.
 */
export const makePeers = () => {
  const byType = new Map<string, TestClients>()

  /** A client of `entityId` whose calls go to the peer test client of `entity`'s type. */
  const clientOf = (entity: Entity.Any, entityId: string) =>
    new Proxy({}, {
      get: (_target, tag) => {
        if (typeof tag !== "string") return undefined
        const rpc = entity.protocol.requests.get(tag) as Rpc.AnyWithProps | undefined
        if (rpc === undefined) return undefined
        const client = Effect.suspend(() => {
          const clients = byType.get(entity.type)
          return clients ? clients(entityId) : Effect.dieMessage(`no peer test client of ${entity.type}`)
        })
        return (...args: Array<unknown>) =>
          RpcSchema.isStreamSchema(rpc.successSchema)
            ? Stream.unwrap(Effect.map(client, (c) => c[tag]!(...args) as Stream.Stream<unknown, unknown>))
            : Effect.flatMap(client, (c) => c[tag]!(...args) as Effect.Effect<unknown, unknown>)
      }
    })

  /** Puts a `makeClient` into the stand-in Sharding the test client provides. */
  const withClients = Layer.effect(
    Sharding.Sharding,
    Effect.map(Sharding.Sharding, (standIn) =>
      Sharding.Sharding.of({
        ...standIn,
        makeClient: ((entity: Entity.Any) =>
          Effect.succeed((entityId: string) => clientOf(entity, entityId))) as unknown as Sharding.Sharding[
            "Type"
          ]["makeClient"]
      }))
  )

  return {
    /** A test client of `entity` whose handlers `layer` registers; its clients of other entities reach the peers. */
    add: <Type extends string, Rpcs extends Rpc.Any, LA, LE, LR>(
      entity: Entity.Entity<Type, Rpcs>,
      layer: Layer.Layer<LA, LE, LR>
    ) =>
      Effect.tap(
        makeTestClient(entity, Layer.provide(layer, withClients)),
        (clients) => Effect.sync(() => byType.set(entity.type, clients as unknown as TestClients))
      ) as Effect.Effect<
        (entityId: string) => Effect.Effect<RpcClient.RpcClient<Rpcs>>,
        LE,
        Effect.Effect.Context<ReturnType<typeof makeTestClient<Type, Rpcs, LA, LE, LR>>>
      >
  }
}

/**
 * The integrator's memory stores, an audit log in memory, one egress guard (loopback allowed) and `ToolWorker` and
 * `Connection` test clients over them, added to new peers: what entity-level tests of either, or of a session that
 * calls them, start from. The entities live as long as the scope.
 */
export const toolsAndConnections = (options: {
  readonly tools: ReadonlyArray<Tool>
  readonly llm?: Partial<LlmGateway.LlmGatewayConfig["Type"]>
  readonly resilience?: Partial<Resilience.ResilienceConfig["Type"]>
}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(Layer.mergeAll(
      IntegratorService.storesMemory,
      MemorySink.layer,
      ToolService.egressTest(),
      ShardingConfig.layerDefaults
    ))
    const peers = makePeers()
    // the tool service shares the process's guard, as in production
    const egress = Layer.succeedContext(context).pipe(Layer.project(Egress, Egress, (e) => e))
    yield* peers.add(ToolWorker, ToolService.layerTest({ egress, extra: options.tools })).pipe(Effect.provide(context))
    const connections = yield* peers.add(
      Connection,
      IntegratorService.layerTest({ llm: options.llm, resilience: options.resilience })
    ).pipe(Effect.provide(context))
    return { context, peers, connections }
  })
