import { AuditMemory } from "@altan/audit/MemorySink"
import * as MemorySink from "@altan/audit/MemorySink"
import { Connection, connectionId, llmConnectionId } from "@altan/domain/Connection"
import { Egress } from "@altan/domain/Egress"
import type { TenantId } from "@altan/domain/Ids"
import { ToolFailed, ToolWorker } from "@altan/domain/ToolWorker"
import { ConnectionStore } from "@altan/integrator/ConnectionStore"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import { SecretStore } from "@altan/integrator/SecretStore"
import { TenantConfig } from "@altan/integrator/TenantConfig"
import * as Tool from "@altan/tool/Tool"
import * as ToolService from "@altan/tool/ToolService"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { makePeers } from "./entityPeers.js"
import { startFakeOpenAi } from "./FakeOpenAi.js"

// `ConnectionLive`'s handlers through `Entity.makeTestClient`, calling a `ToolWorkerLive` test client for its tool
// calls and the fake OpenAI server for its LLM turns: no sharding, no runner.

const acme = "acme" as TenantId
const globex = "globex" as TenantId
const apiKey = "sk-probe-7f3a9c1e5b"

/** A tool of provider `probe` that reports the credential it was handed (its value only as "is it the key?"). */
const whoami = Tool.make({
  id: "probe.whoami",
  name: "who am I",
  description: "Reports the credential of the call.",
  provider: "probe",
  input: Schema.Struct({}),
  output: Schema.Struct({ header: Schema.String, is_key: Schema.Boolean, value: Schema.String }),
  run: (_input, ctx) =>
    Effect.map(Tool.requireCredential("probe.whoami", "probe", ctx), (credential) => {
      const value = Redacted.value(credential.value)
      return { header: credential.header, is_key: value === `Bearer ${apiKey}`, value }
    })
})

/** Fails retryably the first `times` calls per label, then answers how many calls it took. */
const flakyCalls = new Map<string, number>()
const flaky = Tool.make({
  id: "probe.flaky",
  name: "flaky",
  description: "Fails the first `times` calls of a label.",
  provider: "flaky",
  input: Schema.Struct({ label: Schema.String, times: Schema.Number }),
  output: Schema.Struct({ calls: Schema.Number }),
  sideEffect: true,
  run: ({ label, times }) =>
    Effect.suspend(() => {
      const calls = (flakyCalls.get(label) ?? 0) + 1
      flakyCalls.set(label, calls)
      return calls <= times
        ? Effect.fail(new ToolFailed({ tool_id: "probe.flaky", message: "try again", retryable: true, status: 503 }))
        : Effect.succeed({ calls })
    })
})

let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let fallbackFake: Awaited<ReturnType<typeof startFakeOpenAi>>
beforeAll(async () => {
  fake = await startFakeOpenAi()
  fallbackFake = await startFakeOpenAi()
})
afterAll(async () => {
  await fake.close()
  await fallbackFake.close()
})

const services = Layer.mergeAll(
  IntegratorService.storesMemory,
  MemorySink.layer,
  ToolService.egressTest(),
  ShardingConfig.layerDefaults
)

/** `Connection` and `ToolWorker` test clients over memory stores; the entities live as long as the scope. */
const setup = Effect.gen(function*() {
  const context = yield* Layer.build(services)
  const peers = makePeers()
  // the tool service shares the process's guard, as in production
  const sharedEgress = Layer.succeedContext(context).pipe(Layer.project(Egress, Egress, (e) => e))
  yield* peers.add(ToolWorker, ToolService.layerTest({ egress: sharedEgress, extra: [whoami, flaky] })).pipe(
    Effect.provide(context)
  )
  const connections = yield* peers.add(
    Connection,
    IntegratorService.layerTest({
      llm: { maxAttempts: 1 },
      resilience: { maxAttempts: 3, breakerThreshold: 3, breakerCooldown: Duration.minutes(1) }
    })
  ).pipe(Effect.provide(context))
  const connection = (tenant: TenantId, provider: string) => connections(connectionId(tenant, provider))
  return {
    connection,
    llm: (tenant: TenantId, llmId: string) => connections(llmConnectionId(tenant, llmId)),
    connectionStore: Context.get(context, ConnectionStore),
    secrets: Context.get(context, SecretStore),
    config: Context.get(context, TenantConfig),
    audit: Context.get(context, AuditMemory)
  }
})

const connectProbe = (world: Effect.Effect.Success<typeof setup>, tenant: TenantId) =>
  Effect.gen(function*() {
    yield* Effect.orDie(world.secrets.put(tenant, "probe_key", Redacted.make(apiKey)))
    yield* world.connectionStore.put(tenant, "probe", {
      type: "api_key",
      secret: "probe_key",
      header: "Authorization",
      prefix: "Bearer "
    })
  })

describe("Connection (entity test client)", () => {
  it.scopedLive("Invoke hands the tenant's own key to the tool and masks it in the output and the audit", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const acmeProbe = yield* world.connection(acme, "probe")
      // not connected yet: the tool says how to connect, and nothing was retried
      const missing = yield* Effect.flip(acmeProbe.Invoke({ tool_id: "probe.whoami", input: {} }))
      expect(missing).toMatchObject({
        _tag: "ToolFailed",
        message: expect.stringContaining("PUT /v1/connections/probe")
      })

      yield* connectProbe(world, acme)
      const result = yield* acmeProbe.Invoke({ tool_id: "probe.whoami", input: {}, task_id: "s1.t1", step_id: "a" })
      expect(result.output).toMatchObject({ header: "Authorization", is_key: true })
      expect(JSON.stringify(result)).not.toContain(apiKey)

      // the same provider for another tenant holds another relationship: no key of acme's
      const globexProbe = yield* world.connection(globex, "probe")
      expect(yield* Effect.flip(globexProbe.Invoke({ tool_id: "probe.whoami", input: {} }))).toMatchObject({
        _tag: "ToolFailed"
      })

      const records = world.audit.records()
      const invoked = records.filter((r) => r.action === "tool.invoke" && r.tenant_id === "acme")
      expect(invoked.map((r) => r.outcome)).toEqual(["failed", "ok"])
      expect(invoked[1]!.details).toMatchObject({ provider: "probe", task_id: "s1.t1", step_id: "a" })
      expect(JSON.stringify(records)).not.toContain(apiKey)
    }))

  it.scopedLive("a transient failure is retried when repeating is safe, and not for a write that may have applied", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const flakyConnection = yield* world.connection(acme, "flaky")
      const safe = yield* flakyConnection.Invoke({
        tool_id: "probe.flaky",
        input: { label: "safe", times: 2 },
        policy: { idempotent: true, idempotency_key: false }
      })
      expect(safe.output).toEqual({ calls: 3 })
      expect(safe.attempts).toBe(3)

      const unsafe = yield* Effect.flip(flakyConnection.Invoke({
        tool_id: "probe.flaky",
        input: { label: "unsafe", times: 1 },
        policy: { idempotent: false, idempotency_key: false }
      }))
      expect(unsafe).toMatchObject({ _tag: "ToolFailed", retryable: true })
      expect(flakyCalls.get("unsafe")).toBe(1)
    }))

  it.scopedLive("failures open the provider's breaker: the next call is refused without reaching the tool", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const flakyConnection = yield* world.connection(globex, "flaky")
      const once = (label: string) =>
        Effect.flip(flakyConnection.Invoke({
          tool_id: "probe.flaky",
          input: { label, times: 100 },
          policy: { idempotent: true, idempotency_key: false }
        }))
      // three tries, three consecutive failures: the threshold
      expect(yield* once("breaker-1")).toMatchObject({ _tag: "ToolFailed", attempts: 3 })
      expect(flakyCalls.get("breaker-1")).toBe(3)
      const refused = yield* once("breaker-2")
      expect(refused).toMatchObject({ _tag: "UpstreamUnavailable", provider: "flaky" })
      expect(flakyCalls.get("breaker-2")).toBeUndefined()
      // another tenant's breaker for the same provider is its own
      const acmeFlaky = yield* world.connection(acme, "flaky")
      expect(
        (yield* acmeFlaky.Invoke({
          tool_id: "probe.flaky",
          input: { label: "acme-after-globex-broke", times: 0 },
          policy: { idempotent: true, idempotency_key: false }
        })).output
      ).toEqual({ calls: 1 })
    }))

  it.scopedLive("Complete answers through the tenant's LLM with its key, and hands a failing turn to the fallback", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const turn = {
        messages: [{ role: "user" as const, content: "hello" }],
        tools: [],
        fallbacks: ["backup"],
        task_id: "s1.t2"
      }
      // no LLM of that name for the tenant
      expect(yield* Effect.flip((yield* world.llm(acme, "main")).Complete(turn))).toMatchObject({
        _tag: "LlmNotConfigured"
      })

      yield* Effect.orDie(world.secrets.put(acme, "main_key", Redacted.make("sk-main-1")))
      yield* Effect.orDie(world.secrets.put(acme, "backup_key", Redacted.make("sk-backup-2")))
      yield* world.config.putLlm(acme, {
        llm_id: "main",
        endpoint: fake.url,
        auth: { type: "api_key", key: "main_key" },
        model: "m"
      })
      yield* world.config.putLlm(acme, {
        llm_id: "backup",
        endpoint: fallbackFake.url,
        auth: { type: "api_key", key: "backup_key" },
        model: "b"
      })
      fake.script({ kind: "answer", content: "from main" })
      const answered = yield* (yield* world.llm(acme, "main")).Complete(turn)
      expect(answered).toMatchObject({ llm_id: "main", content: "from main" })
      expect(fake.received.map((r) => r.authorization)).toEqual(["Bearer sk-main-1"])
      expect(fake.received[0]!.body.messages).toEqual([{ role: "user", content: "hello" }])

      fake.script({ kind: "status", status: 500 })
      fallbackFake.script({ kind: "answer", content: "from backup" })
      const fellBack = yield* (yield* world.llm(acme, "main")).Complete(turn)
      expect(fellBack).toMatchObject({ llm_id: "backup", content: "from backup" })
      expect(fallbackFake.received.map((r) => r.authorization)).toEqual(["Bearer sk-backup-2"])
      expect(JSON.stringify(world.audit.records())).not.toMatch(/sk-(main|backup)/)
    }))

  it.scopedLive("Disconnect forgets the connection; an authorization callback without an OAuth2 connection is not found", () =>
    Effect.gen(function*() {
      const world = yield* setup
      yield* connectProbe(world, acme)
      const probe = yield* world.connection(acme, "probe")
      expect(
        yield* Effect.flip(probe.CompleteAuthorization({ code: "c", code_verifier: "v", redirect_uri: "http://x/cb" }))
      ).toMatchObject({ _tag: "NotFound" })
      expect(yield* probe.Disconnect()).toBe(true)
      expect(yield* probe.Disconnect()).toBe(false)
      expect((yield* world.connectionStore.get(acme, "probe"))._tag).toBe("None")
      expect(yield* Effect.flip(probe.Invoke({ tool_id: "probe.whoami", input: {} }))).toMatchObject({
        _tag: "ToolFailed",
        message: expect.stringContaining("no probe connection")
      })
    }))
})
