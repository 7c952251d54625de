import * as AgentConfig from "@altan/agent/AgentConfig"
import { AgentSessionLive } from "@altan/agent/AgentSession"
import * as SessionStore from "@altan/agent/SessionStore"
import { ToolFailed } from "@altan/domain/ToolWorker"
import { ConnectionLive } from "@altan/integrator/Connection"
import * as LlmGateway from "@altan/integrator/LlmGateway"
import * as Tool from "@altan/tool/Tool"
import * as ToolRegistry from "@altan/tool/ToolRegistry"
import { ToolWorkerLive } from "@altan/tool/ToolWorker"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { IntegratorStores, ShardingMemory } from "../src/Runtime.js"

/**
 * Probe tools registered beside the built-ins. They run inside the real ToolWorker, reached through
 * the real AgentSession -> Connection -> ToolWorker path, and record what happened to them.
 */
export const makeProbes = () => {
  const calls: Array<{ tool: string; input: unknown }> = []
  let inFlight = 0
  let maxInFlight = 0
  let bothIn = Deferred.unsafeMake<void>(undefined as any)
  const barrier = Tool.make({
    id: "probe.barrier",
    name: "barrier",
    description: "Waits until two calls are in flight at once (or 5 s), then answers its label.",
    input: Schema.Struct({ label: Schema.String }),
    output: Schema.Struct({ label: Schema.String, concurrent: Schema.Number }),
    run: ({ label }) =>
      Effect.gen(function*() {
        calls.push({ tool: "probe.barrier", input: { label } })
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        if (inFlight >= 2) yield* Deferred.succeed(bothIn, void 0)
        yield* Deferred.await(bothIn).pipe(Effect.timeout("5 seconds"), Effect.ignore)
        const concurrent = maxInFlight
        inFlight--
        return { label, concurrent }
      })
  })
  const echo = Tool.make({
    id: "probe.echo",
    name: "echo",
    description: "Answers its input.",
    input: Schema.Struct({ value: Schema.Unknown }),
    output: Schema.Struct({ value: Schema.Unknown, nested: Schema.Struct({ list: Schema.Array(Schema.Number) }) }),
    run: ({ value }) =>
      Effect.sync(() => {
        calls.push({ tool: "probe.echo", input: { value } })
        return { value, nested: { list: [1, 2, 3] } }
      })
  })
  const fail = Tool.make({
    id: "probe.fail",
    name: "fail",
    description: "Always fails.",
    input: Schema.Struct({}),
    output: Schema.Struct({}),
    run: () =>
      Effect.suspend(() => {
        calls.push({ tool: "probe.fail", input: {} })
        return Effect.fail(
          new ToolFailed({ tool_id: "probe.fail", message: "upstream said no", retryable: false, status: 400 })
        )
      })
  })
  const hang = Tool.make({
    id: "probe.hang",
    name: "hang",
    description: "Never answers.",
    input: Schema.Struct({}),
    output: Schema.Struct({}),
    run: () =>
      Effect.suspend(() => {
        calls.push({ tool: "probe.hang", input: {} })
        return Effect.never
      })
  })
  return {
    tools: [barrier, echo, fail, hang],
    calls,
    maxInFlight: () => maxInFlight,
    reset: () => {
      calls.length = 0
      inFlight = 0
      maxInFlight = 0
      bothIn = Deferred.unsafeMake<void>(undefined as any)
    }
  }
}

/**
 * All three services' entities on one in-memory runner, with the probes registered. The integrator's
 * stores are part of the output, so an HTTP edge built on top shares them with the connections.
 */
export const clusterLayer = (
  probes: ReturnType<typeof makeProbes>,
  options: {
    readonly agent?: Partial<AgentConfig.AgentConfig["Type"]>
    readonly llm?: Partial<LlmGateway.LlmGatewayConfig["Type"]>
  } = {}
) =>
  Layer.mergeAll(
    AgentSessionLive.pipe(Layer.provide(SessionStore.layerMemory), Layer.provide(AgentConfig.layer(options.agent))),
    ConnectionLive.pipe(Layer.provide(LlmGateway.layer.pipe(Layer.provide(LlmGateway.layerConfigValue(options.llm))))),
    ToolWorkerLive.pipe(Layer.provide(ToolRegistry.layerMemory({ extra: probes.tools })))
  ).pipe(Layer.provideMerge(IntegratorStores), Layer.provideMerge(ShardingMemory()))
