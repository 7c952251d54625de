import { AuditMemory } from "@altan/audit/MemorySink"
import { connectionId, llmConnectionId } from "@altan/domain/Connection"
import type { TenantId } from "@altan/domain/Ids"
import { ToolFailed } from "@altan/domain/ToolWorker"
import { ConnectionStore } from "@altan/integrator/ConnectionStore"
import { SecretStore } from "@altan/integrator/SecretStore"
import { TenantConfig } from "@altan/integrator/TenantConfig"
import * as Tool from "@altan/tool/Tool"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { toolsAndConnections } from "./entityPeers.js"
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

/** A provider `switch` upstream whose health the test sets; a call may be held until `release`. */
const upstream = {
  healthy: false,
  hold: undefined as Deferred.Deferred<void> | undefined,
  calls: 0,
  interrupted: 0,
  /** Answers of the next calls, before `healthy` is looked at: a status, and a Retry-After in ms. */
  next: [] as Array<{ readonly status: number; readonly retryAfterMs?: number }>
}
const switched = Tool.make({
  id: "probe.switch",
  name: "switch",
  description: "Fails (503) or answers, as the test says.",
  provider: "switch",
  input: Schema.Struct({}),
  output: Schema.Struct({ n: Schema.Number }),
  run: () =>
    Effect.gen(function*() {
      const n = ++upstream.calls
      if (upstream.hold) {
        yield* Deferred.await(upstream.hold).pipe(Effect.onInterrupt(() => Effect.sync(() => upstream.interrupted++)))
      }
      const scripted = upstream.next.shift()
      if (scripted) {
        return yield* new ToolFailed({
          tool_id: "probe.switch",
          message: `HTTP ${scripted.status}`,
          retryable: true,
          status: scripted.status,
          ...(scripted.retryAfterMs ? { retry_after_ms: scripted.retryAfterMs } : {})
        })
      }
      if (!upstream.healthy) {
        return yield* new ToolFailed({ tool_id: "probe.switch", message: "HTTP 503", retryable: true, status: 503 })
      }
      return { n }
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

/** `Connection` and `ToolWorker` test clients over memory stores; the entities live as long as the scope. */
const setup = Effect.gen(function*() {
  const { connections, context } = yield* toolsAndConnections({
    tools: [whoami, flaky, switched],
    llm: { maxAttempts: 1 },
    resilience: { maxAttempts: 3, breakerThreshold: 3, breakerCooldown: Duration.seconds(10) }
  })
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

  // on the test clock: the cooldown passes when the test says, not after a wall-clock sleep
  it.scoped("after the cooldown one probe goes: its failure reopens the circuit, its success closes it", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const connection = yield* world.connection(acme, "switch")
      // one try per call: the threshold counts calls here
      const call = Effect.either(connection.Invoke({
        tool_id: "probe.switch",
        input: {},
        policy: { idempotent: true, idempotency_key: false, max_attempts: 1 }
      }))
      const tag = (r: Effect.Effect.Success<typeof call>) => (r._tag === "Right" ? "ok" : r.left._tag)
      Object.assign(upstream, { healthy: false, hold: undefined, calls: 0, interrupted: 0, next: [] })
      expect([tag(yield* call), tag(yield* call), tag(yield* call)]).toEqual(["ToolFailed", "ToolFailed", "ToolFailed"])
      // open: refused without a call, and told when to come back
      const refused = yield* call
      expect(refused).toMatchObject({ left: { _tag: "UpstreamUnavailable", retry_after_ms: 10_000 } })
      expect(upstream.calls).toBe(3)
      yield* TestClock.adjust("9 seconds")
      expect(tag(yield* call)).toBe("UpstreamUnavailable")
      expect(upstream.calls).toBe(3)

      // the cooldown is over: one probe reaches the upstream, fails, and the circuit is open again at once
      yield* TestClock.adjust("1 second")
      expect(tag(yield* call)).toBe("ToolFailed")
      expect(upstream.calls).toBe(4)
      expect(tag(yield* call)).toBe("UpstreamUnavailable")
      expect(upstream.calls).toBe(4)

      // recovered; after the cooldown, of four concurrent calls only the probe goes, and its success closes it
      upstream.healthy = true
      upstream.hold = yield* Deferred.make<void>()
      yield* TestClock.adjust("10 seconds")
      const probe = yield* Effect.fork(call)
      while (upstream.calls < 5) yield* Effect.yieldNow()
      const others = yield* Effect.all([call, call, call])
      expect(others.map(tag)).toEqual(["UpstreamUnavailable", "UpstreamUnavailable", "UpstreamUnavailable"])
      yield* Deferred.succeed(upstream.hold, void 0)
      upstream.hold = undefined
      expect(tag(yield* Fiber.join(probe))).toBe("ok")
      expect([tag(yield* call), tag(yield* call)]).toEqual(["ok", "ok"])
      expect(upstream.calls).toBe(7)
    }))

  it.scoped("an interrupted probe gives the probe back: the next call after it may go", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const connection = yield* world.connection(globex, "switch")
      const call = Effect.either(connection.Invoke({
        tool_id: "probe.switch",
        input: {},
        policy: { idempotent: true, idempotency_key: false, max_attempts: 1 }
      }))
      Object.assign(upstream, { healthy: false, hold: undefined, calls: 0, interrupted: 0, next: [] })
      yield* Effect.repeatN(call, 2)
      expect(upstream.calls).toBe(3)
      yield* TestClock.adjust("10 seconds")
      // the probe hangs, and its caller gives up on it
      upstream.hold = yield* Deferred.make<void>()
      const probe = yield* Effect.fork(call)
      while (upstream.calls < 4) yield* Effect.yieldNow()
      yield* Fiber.interrupt(probe)
      // the interruption travels to the tool worker's handler, as it would to another runner's
      while (upstream.interrupted < 1) yield* Effect.yieldNow()
      upstream.hold = undefined
      upstream.healthy = true
      // the connection's handler ends after its tool call did, giving the probe back on its way out: with no time
      // passing, a call soon goes (a probe kept would refuse every call until the circuit is fed a result)
      let next = yield* call
      for (let i = 0; i < 100 && next._tag === "Left"; i++) {
        expect(next.left._tag).toBe("UpstreamUnavailable")
        yield* Effect.yieldNow()
        next = yield* call
      }
      expect(next).toMatchObject({ _tag: "Right" })
      expect(upstream.calls).toBe(5)
    }))

  // the breaker admits the probe before the rate budget does; a probe the budget refuses is given back
  it.scoped("a probe the rate budget refuses does not hold the circuit: the budget's answer is what callers get", () =>
    Effect.gen(function*() {
      const world = yield* setup
      const connection = yield* world.connection(acme, "switch")
      const call = (deadline?: number) =>
        Effect.either(connection.Invoke({
          tool_id: "probe.switch",
          input: {},
          policy: { idempotent: true, idempotency_key: false, max_attempts: 1 },
          ...(deadline !== undefined ? { deadline } : {})
        }))
      Object.assign(upstream, {
        healthy: true,
        hold: undefined,
        calls: 0,
        interrupted: 0,
        // the third failure opens the circuit, and its Retry-After pauses the provider's budget for 20 s
        next: [{ status: 503 }, { status: 503 }, { status: 429, retryAfterMs: 20_000 }]
      })
      yield* Effect.repeatN(call(), 2)
      expect(upstream.calls).toBe(3)
      yield* TestClock.adjust("10 seconds")
      // the cooldown is over but the budget is still paused: a caller that waits one second gets the budget's answer
      const withinASecond = () => Effect.flatMap(Clock.currentTimeMillis, (now) => call(now + 1_000))
      expect(yield* withinASecond()).toMatchObject({ left: { _tag: "RateLimited", provider: "switch" } })
      // no probe is held by the refused call: again the budget answers, not a circuit open "for 1 s"
      expect(yield* withinASecond()).toMatchObject({ left: { _tag: "RateLimited" } })
      expect(upstream.calls).toBe(3)
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
