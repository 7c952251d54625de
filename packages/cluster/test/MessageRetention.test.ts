import { AgentSession } from "@altan/domain/AgentSession"
import type { TaskId } from "@altan/domain/Ids"
import { Principal } from "@altan/domain/Principal"
import { MemoryMessageStorage } from "@altan/storage/MemoryMessageStorage"
import { pruneMemory } from "@altan/storage/MessageRetention"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as ShardId from "@effect/cluster/ShardId"
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { shardGroups, shardsPerGroup } from "../src/RuntimeConfig.js"
import { clusterLayer, makeProbes } from "./fixtures.js"

const probes = makeProbes()
const principal = new Principal({ tenantId: "t1", userId: "u1", role: "member" } as any)
// what the edge adds to a submit: the specs it checked the plan against
const submitted = { principal, llms: [], specs: probes.tools.map((t) => t.spec), accepted_at: new Date().toISOString() }
const plan = (
  tool: string
) => ({
  input: { steps: [{ id: "a", tool, input: tool === "probe.echo" ? { value: 1 } : {} }] },
  mode: "async",
  timeout_ms: 1000
} as any)

layer(clusterLayer(probes), { excludeTestServices: true })("message retention (memory storage)", (it) => {
  it.effect("drops processed messages, keeps unfinished ones, and the runtime keeps working", () =>
    Effect.gen(function*() {
      const store = yield* MemoryMessageStorage
      const storage = yield* MessageStorage.MessageStorage
      const allShards = shardGroups.flatMap((group) =>
        Array.from({ length: shardsPerGroup }, (_, i) => ShardId.make(group, i + 1))
      )
      const sessions = yield* AgentSession.client
      // a task that never finishes: its Run message stays unprocessed
      const hanging = sessions("t1/hang")
      yield* hanging.Submit({ task_id: "hang.1" as TaskId, request: plan("probe.hang"), ...submitted })
      yield* probes.calledEffect("probe.hang")
      for (let i = 0; i < 20; i++) {
        const s = sessions(`t1/r${i}`)
        yield* s.Submit({ task_id: `r${i}.t` as TaskId, request: plan("probe.echo"), ...submitted })
        yield* s.GetTask({ task_id: `r${i}.t` as TaskId, wait_ms: 5000 })
      }
      const before = store.size
      expect(before).toBeGreaterThanOrEqual(42) // Submit + Run per task

      const removed = pruneMemory(store, Date.now() + 1000)
      expect(removed).toBe(before - store.size)
      // only the hanging task's Run is left (its Submit was answered)
      expect(store.size).toBe(1)
      // a read skips what the runner read lately: reset the shards first, as a runner taking them over does
      yield* storage.resetShards(allShards)
      const left = yield* storage.unprocessedMessages(allShards)
      expect(left.map((m) => m.envelope._tag === "Request" && m.envelope.tag)).toEqual(["Run"])

      // a pruned task is still answered by its session, without running again
      const callsBefore = probes.calls.length
      const again = yield* sessions("t1/r3").Submit({
        task_id: "r3.t" as TaskId,
        request: plan("probe.echo"),
        ...submitted
      })
      expect(again.status).toBe("succeeded")
      expect(probes.calls.length).toBe(callsBefore)
      // new work flows through the pruned storage, and the hanging task can still be cancelled
      const fresh = sessions("t1/fresh")
      yield* fresh.Submit({ task_id: "fresh.t" as TaskId, request: plan("probe.echo"), ...submitted })
      expect((yield* fresh.GetTask({ task_id: "fresh.t" as TaskId, wait_ms: 5000 })).status).toBe("succeeded")
      expect((yield* hanging.Cancel({ task_id: "hang.1" as TaskId })).status).toBe("cancelled")
    }))
})
