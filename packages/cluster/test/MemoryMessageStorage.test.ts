import { MemoryMessageStorage } from "@altan/storage/MemoryMessageStorage"
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { ShardingMemory } from "../src/Runtime.js"

// through the cluster: a persisted entity on `ShardingMemory` (the driver alone: packages/storage/test)

const Counter = Entity.make("Counter", [
  Rpc.make("Bump", { payload: { n: Schema.Number }, success: Schema.Number, primaryKey: (p) => String(p.n) })
    .annotate(ClusterSchema.Persisted, true)
]).annotate(ClusterSchema.ShardGroup, () => "agent")

const CounterLive = Counter.toLayer(Effect.succeed({ Bump: ({ payload }) => Effect.succeed(payload.n * 2) }))

layer(CounterLive.pipe(Layer.provideMerge(ShardingMemory())), { excludeTestServices: true })(
  "MemoryMessageStorage in the cluster",
  (it) => {
    it.effect("storage reads per message stay flat as processed history grows", () =>
      Effect.gen(function*() {
        const store = yield* MemoryMessageStorage
        const counters = yield* Counter.client
        const bump = (n: number) => counters(`c${n % 50}`).Bump({ n })
        const visitsPerMessage = (from: number, to: number) =>
          Effect.gen(function*() {
            const before = store.visited
            for (let n = from; n < to; n++) expect(yield* bump(n)).toBe(n * 2)
            return (store.visited - before) / (to - from)
          })
        const early = yield* visitsPerMessage(0, 100)
        yield* visitsPerMessage(100, 900)
        const late = yield* visitsPerMessage(900, 1_000)
        expect(store.size).toBe(1_000)
        expect(store.unprocessedCount).toBe(0)
        // one message in flight: each read visits at most it, never the 1,000 processed ones
        expect(late).toBeLessThanOrEqual(Math.max(early, 1) * 3)
        expect(late).toBeLessThan(10)
        // a repeated primary key is answered from storage, without a new request
        expect(yield* bump(7)).toBe(14)
        expect(store.size).toBe(1_000)
      }))
  }
)
