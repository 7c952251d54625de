import * as Metrics from "@altan/domain/Metrics"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import * as AuditChain from "../src/AuditChain.js"
import * as AuditLog from "../src/AuditLog.js"
import type { AuditEntry } from "../src/AuditLog.js"
import * as MemorySink from "../src/MemorySink.js"
import * as Redaction from "../src/Redaction.js"
import { verify } from "../src/Verify.js"
import { chainOf, collectingLogs, entry, record, records } from "./utils.js"

// ---------------------------------------------------------------------------------------------------------------
// The hash chain
// ---------------------------------------------------------------------------------------------------------------

describe("hash chain", () => {
  it.effect("links each tenant's concurrent records into one chain: seq 1..n, prev_hash, hash", () =>
    Effect.gen(function*() {
      const all = yield* Effect.provide(
        Effect.gen(function*() {
          // 3 tenants x 40 records, all at once, from fibers that yield in between
          yield* Effect.forEach(Array.from({ length: 120 }, (_, i) => i), (i) =>
            Effect.zipRight(
              Effect.yieldNow(),
              record(entry(["acme", "globex", "initech"][i % 3]!, i))
            ), { concurrency: "unbounded", discard: true })
          return yield* records
        }),
        MemorySink.layer
      )
      expect(all).toHaveLength(120)
      const chains = [...new Set(all.map((r) => r.chain))].sort()
      expect(chains).toHaveLength(3)
      const processId = chains[0]!.split("/")[1]!
      expect(processId).toMatch(/^[0-9a-f]{16}$/)
      expect(chains).toEqual(["acme", "globex", "initech"].map((t) => `${t}/${processId}`))
      for (const chain of chains) {
        const links = chainOf(all, chain)
        expect(links.map((r) => r.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
        expect(links[0]!.prev_hash).toBe(AuditChain.genesisHash)
        links.forEach((r, i) => {
          expect(r.tenant_id).toBe(chain.split("/")[0])
          expect(r.hash).toBe(AuditChain.recordHash(r))
          expect(r.hash).toMatch(/^[0-9a-f]{64}$/)
          if (i > 0) expect(r.prev_hash).toBe(links[i - 1]!.hash)
        })
      }
      const result = verify(all)
      expect(result.ok).toBe(true)
      expect(result.records).toBe(120)
      expect(result.chains.map((c) => [c.records, c.firstSeq, c.lastSeq])).toEqual([[40, 1, 40], [40, 1, 40], [
        40,
        1,
        40
      ]])
      expect(result.breaks).toEqual([])
    }))

  it.effect("gives every writing process its own chains, which verify independently", () =>
    Effect.gen(function*() {
      const memory = MemorySink.make()
      const first = yield* AuditLog.make(memory)
      const second = yield* AuditLog.make(memory)
      yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
        (i % 2 === 0 ? first : second).record(entry("acme", i)), { concurrency: "unbounded", discard: true })
      const all = memory.records()
      const chains = [
        ...new Set(all.map((r) =>
          r.chain
        ))
      ]
      expect(chains).toHaveLength(2)
      expect(chains.every((c) => c.startsWith("acme/"))).toBe(true)
      for (const chain of chains) expect(chainOf(all, chain).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      const result = verify(all)
      expect(result.ok).toBe(true)
      expect(result.chains.map((c) => c.records)).toEqual([10, 10])

      // an explicit process id names the chains
      const named = yield* AuditLog.make(memory, { processId: "runner-7" })
      yield* named.record(entry("acme", 1))
      expect(memory.records().at(-1)).toMatchObject({ chain: "acme/runner-7", seq: 1 })
    }))

  it.effect("stamps time from the Clock, keeps the entry's fields, and hashes canonical JSON", () =>
    Effect.gen(function*() {
      yield* record({ tenant_id: "acme", action: "config.change", target: "secret:openai", outcome: "ok" })
      const [r] = yield* records
      expect(r).toEqual({
        tenant_id: "acme",
        action: "config.change",
        target: "secret:openai",
        outcome: "ok",
        time: "1970-01-01T00:00:00.000Z",
        chain: expect.stringMatching(/^acme\/[^/]+$/),
        seq: 1,
        prev_hash: AuditChain.genesisHash,
        hash: AuditChain.recordHash(r!)
      })
      // key order and whitespace do not matter; values do
      expect(AuditChain.canonicalJson({ b: [1, { d: 2, c: "x" }], a: null, u: undefined })).toBe(
        "{\"a\":null,\"b\":[1,{\"c\":\"x\",\"d\":2}]}"
      )
      const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(r!).reverse())))
      expect(AuditChain.recordHash(reordered)).toBe(r!.hash)
    }).pipe(Effect.provide(MemorySink.layer)))

  it.effect("takes the trace id from the current span", () =>
    Effect.gen(function*() {
      const traceId = yield* Effect.withSpan(
        Effect.zipRight(record(entry("acme", 1)), Effect.map(Effect.currentSpan, (s) => s.traceId)),
        "Connection.Invoke"
      )
      yield* record(entry("acme", 2))
      const [inSpan, outside] = yield* records
      expect(inSpan!.trace_id).toBe(traceId)
      expect(traceId).toMatch(/^[0-9a-f]{32}$/)
      expect(outside).not.toHaveProperty("trace_id")
      expect(verify([inSpan, outside]).ok).toBe(true)
    }).pipe(Effect.provide(MemorySink.layer)))
})

// ---------------------------------------------------------------------------------------------------------------
// Never failing, never leaking
// ---------------------------------------------------------------------------------------------------------------

describe("record", () => {
  it.effect("never fails or dies when the sink does; the lost record is a gap verify reports", () =>
    Effect.gen(function*() {
      const memory = MemorySink.make()
      let calls = 0
      const flaky: AuditLog.AuditSink = {
        name: "flaky",
        write: (r) => {
          calls++
          if (calls === 2) throw new AuditLog.AuditSinkError({ message: "disk full" })
          if (calls === 3) JSON.parse("{")
          if (calls === 4) throw new Error("boom")
          memory.write(r)
        }
      }
      const failures = Metric.tagged(Metrics.auditSinkFailures, "sink", "flaky")
      const before = (yield* Metric.value(failures)).count
      const log = yield* AuditLog.make(flaky)
      const [, logs] = yield* collectingLogs(Effect.gen(function*() {
        for (let i = 1; i <= 5; i++) {
          expect(Exit.isSuccess(yield* Effect.exit(log.record(entry("acme", i))))).toBe(true)
        }
      }))
      expect((yield* Metric.value(failures)).count - before).toBe(3)
      const chain = memory.records()[0]!.chain
      expect(logs).toEqual([
        `WARN audit: the flaky sink lost record ${chain} #2 (tool.invoke tool:slack.post_message): disk full`,
        `WARN audit: the flaky sink lost record ${chain} #3 (tool.invoke tool:slack.post_message)`,
        `WARN audit: the flaky sink lost record ${chain} #4 (tool.invoke tool:slack.post_message)`
      ])
      expect(memory.records().map((r) => r.seq)).toEqual([1, 5])
      const result = verify(memory.records())
      expect(result.ok).toBe(false)
      expect(result.breaks).toEqual([{
        chain: memory.records()[0]!.chain,
        seq: 2,
        reason: "missing seq 2",
        index: undefined
      }])

      // a sink that throws something other than an AuditSinkError
      const throwing: AuditLog.AuditSink = {
        name: "throwing",
        write: () => {
          throw new Error("not a sink error")
        }
      }
      const broken = yield* AuditLog.make(throwing)
      const [, thrown] = yield* collectingLogs(Effect.gen(function*() {
        expect(Exit.isSuccess(yield* Effect.exit(broken.record(entry("acme", 1))))).toBe(true)
        // even an entry that is not what the type says
        expect(Exit.isSuccess(yield* Effect.exit(log.record(null as any)))).toBe(true)
      }))
      expect(thrown).toEqual([
        expect.stringMatching(/^WARN audit: the throwing sink lost record acme\/\w+ #1 /),
        "WARN audit: could not record an entry"
      ])
    }))

  it.effect("replaces sensitive details with <redacted> at any depth, and the record still verifies", () =>
    Effect.gen(function*() {
      const secret = "sk-live-0123456789"
      yield* record(entry("acme", 1, {
        details: {
          Authorization: `Bearer ${secret}`,
          password: secret,
          api_key: secret,
          "X-Api-Key": secret,
          value: secret,
          secret,
          nested: { token: secret, client_secret: secret, list: [{ access_token: secret }, "Bearer abc.def"] },
          header: `bearer ${secret}`,
          jwt: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.sig",
          note: `upstream said: invalid key ${secret}`,
          redacted: Redacted.make(secret),
          // kept: names of secrets, token counts, plain facts
          secret_name: "openai_api_key",
          prompt_tokens: 120,
          status: 429,
          when: new Date(0),
          big: BigInt(2) ** BigInt(70),
          nan: Number.NaN,
          skipped: undefined,
          fn: () => secret
        }
      }))
      const [r] = yield* records
      expect(JSON.stringify(r)).not.toContain(secret)
      expect(r!.details).toEqual({
        Authorization: "<redacted>",
        password: "<redacted>",
        api_key: "<redacted>",
        "X-Api-Key": "<redacted>",
        value: "<redacted>",
        secret: "<redacted>",
        nested: {
          token: "<redacted>",
          client_secret: "<redacted>",
          list: [{ access_token: "<redacted>" }, "<redacted>"]
        },
        header: "<redacted>",
        jwt: "<redacted>",
        note: "upstream said: invalid key <redacted>",
        redacted: "<redacted>",
        secret_name: "openai_api_key",
        prompt_tokens: 120,
        status: 429,
        when: "1970-01-01T00:00:00.000Z",
        big: "1180591620717411303424",
        nan: null
      })
      // what a sink writes parses back to the same hash
      expect(verify([JSON.parse(JSON.stringify(r))]).ok).toBe(true)

      const cyclic: Record<string, unknown> = { a: 1 }
      cyclic.self = cyclic
      expect(Redaction.sanitizeDetails({ cyclic })).toEqual({ cyclic: { a: 1, self: "<circular>" } })
      expect(["Token", "refreshToken", "x-authorization", "PRIVATE_KEY", "credentials"].every(Redaction.isSensitiveKey))
        .toBe(true)
      expect(["tokens", "max_tokens", "secret_name", "key", "values", "status"].some(Redaction.isSensitiveKey)).toBe(
        false
      )
    }).pipe(Effect.provide(MemorySink.layer)))

  it.effect("counts records by action and outcome", () =>
    Effect.gen(function*() {
      const counter = Metric.tagged(Metric.tagged(Metrics.auditRecords, "action", "authz.failure"), "outcome", "denied")
      const before = (yield* Metric.value(counter)).count
      yield* record(entry("acme", 1, { action: "authz.failure", outcome: "denied" }))
      yield* record(entry("globex", 1, { action: "authz.failure", outcome: "denied" }))
      expect((yield* Metric.value(counter)).count - before).toBe(2)

      const slack = Metrics.callMetrics("acme", "slack")
      yield* slack.call("ok")
      yield* slack.call("rate_limited")
      yield* slack.rateLimitWait("250 millis")
      const tagged = (outcome: string) =>
        Metric.tagged(
          Metric.tagged(Metric.tagged(Metrics.calls, "tenant", "acme"), "provider", "slack"),
          "outcome",
          outcome
        )
      expect((yield* Metric.value(tagged("ok"))).count).toBe(1)
      expect((yield* Metric.value(tagged("rate_limited"))).count).toBe(1)
      const wait = Metric.tagged(Metric.tagged(Metrics.rateLimitWaitSeconds, "tenant", "acme"), "provider", "slack")
      expect(yield* Metric.value(wait)).toMatchObject({ count: 1, sum: 0.25 })
    }).pipe(Effect.provide(MemorySink.layer)))
})

// ---------------------------------------------------------------------------------------------------------------
// Timing a call
// ---------------------------------------------------------------------------------------------------------------

class Refused extends Data.TaggedError("Refused")<{ readonly code: string }> {}

describe("timed", () => {
  /** The entry of a call to `target`, with what its exit says. */
  const callEntry = (target: string) => (exit: Exit.Exit<number, Refused>, latency_ms: number): AuditEntry => ({
    tenant_id: "acme",
    action: "http.request",
    target,
    outcome: Exit.isSuccess(exit) ? "ok" : "failed",
    latency_ms,
    details: Exit.match(exit, {
      onSuccess: (result) => ({ result }),
      onFailure: (cause) => ({
        error: Option.match(Cause.failureOption(cause), { onNone: () => "defect", onSome: (e) => e.code })
      })
    })
  })

  it.effect("records the outcome and the time the call took by the Clock, and passes on its result", () =>
    Effect.gen(function*() {
      const audit = yield* AuditLog.AuditLog
      const call = Effect.as(Effect.sleep("250 millis"), 42)
      const fiber = yield* Effect.fork(AuditLog.timed(call, audit, callEntry("api.example.com/ok")))
      yield* TestClock.adjust("100 millis")
      expect(yield* records).toEqual([])
      yield* TestClock.adjust("150 millis")
      expect(yield* Fiber.join(fiber)).toBe(42)
      expect(yield* records).toMatchObject([{
        action: "http.request",
        target: "api.example.com/ok",
        outcome: "ok",
        latency_ms: 250,
        details: { result: 42 }
      }])
    }).pipe(Effect.provide(MemorySink.layer)))

  it.effect("records a failure and fails with the same error, used in a pipe as in one call", () =>
    Effect.gen(function*() {
      const audit = yield* AuditLog.AuditLog
      const refused = new Refused({ code: "quota" })
      const call = Effect.zipRight(Effect.sleep("2 seconds"), Effect.fail(refused))
      const fiber = yield* Effect.fork(call.pipe(AuditLog.timed(audit, callEntry("api.example.com/refused"))))
      yield* TestClock.adjust("2 seconds")
      expect(yield* Effect.flip(Fiber.join(fiber))).toBe(refused)
      // a defect too is recorded, and stays the caller's defect
      const died = yield* Effect.exit(AuditLog.timed(Effect.die("boom"), audit, callEntry("api.example.com/died")))
      expect(died).toEqual(Exit.die("boom"))
      expect(yield* records).toMatchObject([
        { target: "api.example.com/refused", outcome: "failed", latency_ms: 2000, details: { error: "quota" } },
        { target: "api.example.com/died", outcome: "failed", latency_ms: 0, details: { error: "defect" } }
      ])
    }).pipe(Effect.provide(MemorySink.layer)))

  it.effect("records nothing when the call is interrupted", () =>
    Effect.gen(function*() {
      const audit = yield* AuditLog.AuditLog
      const fiber = yield* Effect.fork(AuditLog.timed(Effect.never, audit, callEntry("api.example.com/never")))
      yield* TestClock.adjust("1 second")
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      expect(yield* records).toEqual([])
      // the Tag carries the same helper, for modules that import only the Tag
      expect(AuditLog.AuditLog.timed).toBe(AuditLog.timed)
    }).pipe(Effect.provide(MemorySink.layer)))
})
