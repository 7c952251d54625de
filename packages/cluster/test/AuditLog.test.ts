import type { AuditEntry, AuditRecord } from "@altan/domain/AuditLog"
import * as Metrics from "@altan/domain/Metrics"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Redacted from "effect/Redacted"
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as AuditLog from "../src/AuditLog.js"

const root = fileURLToPath(new URL("../../..", import.meta.url))

const entry = (tenant: string, i: number, overrides: Partial<AuditEntry> = {}): AuditEntry => ({
  tenant_id: tenant,
  user: `user-${i}`,
  action: "tool.invoke",
  target: `tool:slack.post_message`,
  outcome: i % 3 === 0 ? "failed" : "ok",
  latency_ms: 10 + i / 4,
  details: { step: `s${i}`, status: 200 },
  ...overrides
})

const record = (e: AuditEntry) => Effect.flatMap(AuditLog.AuditLog, (log) => log.record(e))
const records = Effect.map(AuditLog.AuditMemory, (memory) => memory.records())

/** Runs `effect` with a logger that collects `LEVEL message` lines instead of printing them. */
const collectingLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const messages: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) =>
      void messages.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    )
    const result = yield* Effect.provide(effect, Logger.replace(Logger.defaultLogger, logger))
    return [result, messages] as const
  })

/** The records of one chain, in the order written. */
const chainOf = (all: ReadonlyArray<AuditRecord>, chain: string) => all.filter((r) => r.chain === chain)

/** A memory sink shared by several writers (processes). */
const sharedMemory = () => AuditLog.memorySink()

/** Copies of `records` with record `seq` of `chain` changed by `f`. */
const tamper = (
  all: ReadonlyArray<AuditRecord>,
  chain: string,
  seq: number,
  f: (r: AuditRecord) => AuditRecord | undefined
) =>
  all.flatMap((r) => {
    if (r.chain !== chain || r.seq !== seq) return [r]
    const changed = f(r)
    return changed === undefined ? [] : [changed]
  })

const rehash = (r: Omit<AuditRecord, "hash"> & { hash?: string }): AuditRecord =>
  ({ ...r, hash: AuditLog.recordHash(r) }) as AuditRecord

/** Three tenants, one writer, 8 records each, written concurrently. */
const written = Effect.gen(function*() {
  yield* Effect.forEach(
    ["acme", "globex", "initech"].flatMap((tenant) => Array.from({ length: 8 }, (_, i) => entry(tenant, i + 1))),
    record,
    { concurrency: "unbounded", discard: true }
  )
  return yield* records
}).pipe(Effect.provide(AuditLog.layerMemory))

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
        AuditLog.layerMemory
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
        expect(links[0]!.prev_hash).toBe(AuditLog.genesisHash)
        links.forEach((r, i) => {
          expect(r.tenant_id).toBe(chain.split("/")[0])
          expect(r.hash).toBe(AuditLog.recordHash(r))
          expect(r.hash).toMatch(/^[0-9a-f]{64}$/)
          if (i > 0) expect(r.prev_hash).toBe(links[i - 1]!.hash)
        })
      }
      const result = AuditLog.verify(all)
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
      const memory = sharedMemory()
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
      const result = AuditLog.verify(all)
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
        prev_hash: AuditLog.genesisHash,
        hash: AuditLog.recordHash(r!)
      })
      // key order and whitespace do not matter; values do
      expect(AuditLog.canonicalJson({ b: [1, { d: 2, c: "x" }], a: null, u: undefined })).toBe(
        "{\"a\":null,\"b\":[1,{\"c\":\"x\",\"d\":2}]}"
      )
      const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(r!).reverse())))
      expect(AuditLog.recordHash(reordered)).toBe(r!.hash)
    }).pipe(Effect.provide(AuditLog.layerMemory)))

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
      expect(AuditLog.verify([inSpan, outside]).ok).toBe(true)
    }).pipe(Effect.provide(AuditLog.layerMemory)))
})

// ---------------------------------------------------------------------------------------------------------------
// Never failing, never leaking
// ---------------------------------------------------------------------------------------------------------------

describe("record", () => {
  it.effect("never fails or dies when the sink does; the lost record is a gap verify reports", () =>
    Effect.gen(function*() {
      const memory = sharedMemory()
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
      const result = AuditLog.verify(memory.records())
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
      expect(AuditLog.verify([JSON.parse(JSON.stringify(r))]).ok).toBe(true)

      const cyclic: Record<string, unknown> = { a: 1 }
      cyclic.self = cyclic
      expect(AuditLog.sanitizeDetails({ cyclic })).toEqual({ cyclic: { a: 1, self: "<circular>" } })
      expect(["Token", "refreshToken", "x-authorization", "PRIVATE_KEY", "credentials"].every(AuditLog.isSensitiveKey))
        .toBe(true)
      expect(["tokens", "max_tokens", "secret_name", "key", "values", "status"].some(AuditLog.isSensitiveKey)).toBe(
        false
      )
    }).pipe(Effect.provide(AuditLog.layerMemory)))

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
    }).pipe(Effect.provide(AuditLog.layerMemory)))
})

// ---------------------------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------------------------

describe("verify", () => {
  it.effect("names the first broken link of each chain", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const globex = all.find((r) => r.tenant_id === "globex")!.chain
      expect(AuditLog.verify(all).ok).toBe(true)

      // a field changed in place: that record's own hash no longer matches
      const flipped = tamper(all, acme, 3, (r) => ({ ...r, outcome: r.outcome === "failed" ? "ok" : "failed" }))
      expect(chainOf(all, acme)[2]!.outcome).toBe("failed")
      const a = AuditLog.verify(flipped)
      expect(a.ok).toBe(false)
      expect(a.breaks).toEqual([{ chain: acme, seq: 3, reason: "hash mismatch", index: expect.any(Number) }])
      expect(flipped[a.breaks[0]!.index!]).toMatchObject({ chain: acme, seq: 3, outcome: "ok" })
      expect(a.chains.filter((c) => !c.ok).map((c) => c.chain)).toEqual([acme])

      // a record deleted
      const deleted = AuditLog.verify(tamper(all, acme, 5, () => undefined))
      expect(deleted.breaks).toEqual([{ chain: acme, seq: 5, reason: "missing seq 5", index: undefined }])
      // the first one deleted too
      expect(AuditLog.verify(tamper(all, globex, 1, () => undefined)).breaks).toMatchObject([{
        chain: globex,
        seq: 1,
        reason: "missing seq 1"
      }])

      // changed and re-hashed: the next record's prev_hash gives it away
      const rehashed = tamper(all, acme, 4, (r) => rehash({ ...r, outcome: "ok", latency_ms: 1 }))
      expect(AuditLog.verify(rehashed).breaks).toMatchObject([{ chain: acme, seq: 5, reason: "prev_hash mismatch" }])

      // prev_hash rewritten (e.g. to hide a deleted record) and re-hashed: broken at that record
      const relinked = tamper(
        tamper(all, acme, 6, () => undefined),
        acme,
        7,
        (r) => rehash({ ...r, seq: 6, prev_hash: chainOf(all, acme)[5]!.hash })
      )
      expect(AuditLog.verify(relinked).breaks).toMatchObject([{ chain: acme, seq: 6, reason: "prev_hash mismatch" }])

      // two chains broken at once: one break each, in chain order
      const both = AuditLog.verify(tamper(flipped, globex, 2, (r) => ({ ...r, target: "tool:other" })))
      expect(both.breaks.map((b) => [b.chain, b.seq, b.reason])).toEqual([
        [acme, 3, "hash mismatch"],
        [globex, 2, "hash mismatch"]
      ])

      // a forged record in place of an existing seq
      const forged = rehash({ ...chainOf(all, globex)[3]!, target: "tool:forged" })
      expect(AuditLog.verify([...all, forged]).breaks).toMatchObject([{
        chain: globex,
        seq: 4,
        reason: "duplicate seq"
      }])
      // an entry delivered twice is not a break; order does not matter
      expect(AuditLog.verify([...all, ...all.slice(0, 5)].reverse()).ok).toBe(true)
    }))

  it.effect("reports malformed records and lines, attributed to their chain when they name one", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const { seq: _seq, ...noSeq } = chainOf(all, acme)[1]!
      const badSeq = { ...chainOf(all, acme)[1]!, seq: "2" }
      expect(AuditLog.verify(all.map((r) => (r.chain === acme && r.seq === 2 ? noSeq : r))).breaks).toMatchObject([{
        chain: acme,
        reason: "malformed record"
      }])
      expect(AuditLog.verify(all.map((r) => (r.chain === acme && r.seq === 2 ? badSeq : r))).breaks).toMatchObject([{
        chain: acme,
        reason: "malformed record"
      }])
      const shortHash = tamper(all, acme, 2, (r) => ({ ...r, hash: "abc" }))
      expect(AuditLog.verify(shortHash).breaks).toMatchObject([{ chain: acme, seq: 2, reason: "malformed record" }])

      const text = [...all.map((r) => JSON.stringify(r)), "not json", "{\"hello\":1}", ""].join("\n")
      const items = AuditLog.parseExport(text)
      const result = AuditLog.verify(items.map((i) => i.value))
      expect(result.ok).toBe(false)
      expect(result.breaks).toEqual([{ chain: "(unknown)", seq: undefined, reason: "malformed record", index: 24 }])
      expect(items[24]!.where).toBe("line 25")
      expect(AuditLog.formatReport(result, (i) => items[i]!.where)).toContain(
        "BROKEN (unknown) at seq ?: malformed record (line 25)"
      )
    }))

  it.effect("reads stdout lines, Cloud Logging entries and gcloud's JSON arrays; --partial accepts a window", () =>
    Effect.gen(function*() {
      const all = yield* written
      const lines = all.map((r) => AuditLog.structuredLogLine(r, "p"))
      expect(AuditLog.verify(lines).ok).toBe(true)
      // the logging agent keeps `audit` inside jsonPayload; the API sink's payload is the record
      const exported = [...lines.map((l) => ({ jsonPayload: { audit: (l as any).audit } })), ...[]]
      expect(AuditLog.verify(exported).ok).toBe(true)
      const fromApi = all.map((r) => ({ logName: "projects/p/logs/altan-audit", jsonPayload: r, severity: "INFO" }))
      const array = AuditLog.parseExport(JSON.stringify(fromApi, null, 2))
      expect(array).toHaveLength(24)
      expect(array[0]!.where).toBe("entry 1")
      expect(AuditLog.verify(array.map((i) => i.value)).ok).toBe(true)

      const window = all.filter((r) => r.seq > 3)
      expect(AuditLog.verify(window).breaks.map((b) => b.reason)).toEqual([
        "missing seq 1",
        "missing seq 1",
        "missing seq 1"
      ])
      expect(AuditLog.verify(window, { partial: true }).ok).toBe(true)
      expect(AuditLog.verify(window.filter((r) => r.seq !== 6), { partial: true }).breaks).toHaveLength(3)
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------------------------

describe("audit-verify", () => {
  let dir: string
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "audit-verify-"))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  const run = (args: ReadonlyArray<string>, input?: string) =>
    spawnSync(process.execPath, [
      "--conditions=@altan/source",
      "--import",
      "tsx",
      "packages/cluster/src/audit-verify.ts",
      ...args
    ], { cwd: root, encoding: "utf8", input: input ?? "", timeout: 60_000 })

  it.effect("exits 0 on intact chains, 1 naming chain and seq on a tampered file, 2 on an unreadable one", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const good = join(dir, "good.jsonl")
      writeFileSync(good, all.map((r) => JSON.stringify(AuditLog.structuredLogLine(r))).join("\n") + "\n")
      const ok = run([good])
      expect(ok.status, ok.stderr).toBe(0)
      expect(ok.stdout).toContain("24 records in 3 chains: all chains verify")
      expect(ok.stdout).toContain(`ok     ${acme} seq 1..8 (8)`)

      const tampered = join(dir, "tampered.jsonl")
      const lines = all.map((r) =>
        JSON.stringify(r.chain === acme && r.seq === 3 ? { ...r, outcome: r.outcome === "ok" ? "failed" : "ok" } : r)
      )
      writeFileSync(tampered, lines.join("\n"))
      const bad = run([tampered])
      expect(bad.status, bad.stderr).toBe(1)
      const line = all.findIndex((r) => r.chain === acme && r.seq === 3) + 1
      expect(bad.stdout).toContain(`BROKEN ${acme} at seq 3: hash mismatch (line ${line})`)

      // stdin, and a window with --partial
      const window = all.filter((r) => r.seq > 2).map((r) => JSON.stringify(r)).join("\n")
      expect(run([], window).status).toBe(1)
      expect(run(["--partial"], window).status).toBe(0)

      const missing = run([join(dir, "nope.jsonl")])
      expect(missing.status).toBe(2)
      expect(missing.stderr).toContain("cannot read")
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// stdout sink
// ---------------------------------------------------------------------------------------------------------------

describe("stdout sink", () => {
  it.effect("writes one Cloud Logging structured JSON line per record, with process.stdout.write", () =>
    Effect.gen(function*() {
      const captured: Array<string> = []
      const original = process.stdout.write
      const traceId = yield* Effect.acquireUseRelease(
        Effect.sync(() => {
          process.stdout.write = ((chunk: string | Uint8Array) => {
            captured.push(String(chunk))
            return true
          }) as typeof process.stdout.write
        }),
        () =>
          Effect.gen(function*() {
            const log = yield* AuditLog.make(AuditLog.stdoutSink({ projectId: "altan-test" }))
            const traceId = yield* Effect.withSpan(
              Effect.zipRight(
                log.record(entry("acme", 1, { outcome: "ok", latency_ms: 42 })),
                Effect.map(Effect.currentSpan, (s) => s.traceId)
              ),
              "ToolWorker.Execute"
            )
            yield* log.record(entry("acme", 2, { outcome: "failed" }))
            yield* log.record(
              entry("globex", 3, { action: "auth.failure", target: "POST /v1/tasks", outcome: "denied" })
            )
            return traceId
          }),
        () => Effect.sync(() => void (process.stdout.write = original))
      )
      const lines = captured.filter((c) => c.includes("\"audit\""))
      expect(lines).toHaveLength(3)
      expect(lines.every((l) => l.endsWith("\n") && l.indexOf("\n") === l.length - 1)).toBe(true)
      const [ok, failed, denied] = lines.map((l) => JSON.parse(l))
      expect(ok).toEqual({
        severity: "INFO",
        message: "tool.invoke tool:slack.post_message ok",
        time: "1970-01-01T00:00:00.000Z",
        "logging.googleapis.com/labels": { tenant_id: "acme", action: "tool.invoke", outcome: "ok" },
        "logging.googleapis.com/trace": `projects/altan-test/traces/${traceId}`,
        audit: expect.objectContaining({ tenant_id: "acme", seq: 1, latency_ms: 42, trace_id: traceId })
      })
      expect(failed.severity).toBe("WARNING")
      expect(failed).not.toHaveProperty("logging.googleapis.com/trace")
      expect(denied).toMatchObject({
        severity: "NOTICE",
        message: "auth.failure POST /v1/tasks denied",
        "logging.googleapis.com/labels": { tenant_id: "globex", action: "auth.failure", outcome: "denied" }
      })
      expect(AuditLog.verify([ok, failed, denied]).ok).toBe(true)
      // without a project, the bare trace id
      expect(AuditLog.structuredLogLine(ok.audit)["logging.googleapis.com/trace"]).toBe(traceId)
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// Cloud Logging API sink, against a loopback fake of entries:write
// ---------------------------------------------------------------------------------------------------------------

interface WriteCall {
  readonly path: string
  readonly json: any
  readonly authorization: string | undefined
}

const project = "altan-test"
const writes: Array<WriteCall> = []
let failWith: { status: number; code: string } | undefined
let server: http.Server
let port: number

beforeAll(async () => {
  server = http.createServer(async (req, res) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const path = decodeURIComponent(new URL(req.url!, "http://fake").pathname)
    const json = JSON.parse(Buffer.concat(chunks).toString() || "{}")
    if (req.method !== "POST" || path !== "/v2/entries:write") {
      res.writeHead(404, { "content-type": "application/json" })
      return res.end(JSON.stringify({ error: { code: 404, message: `no route ${path}`, status: "NOT_FOUND" } }))
    }
    if (failWith) {
      res.writeHead(failWith.status, { "content-type": "application/json" })
      return res.end(
        JSON.stringify({
          error: { code: failWith.status, message: "The caller does not have permission", status: failWith.code }
        })
      )
    }
    writes.push({ path, json, authorization: req.headers.authorization })
    res.writeHead(200, { "content-type": "application/json" })
    res.end("{}")
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as AddressInfo).port
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))
beforeEach(() => {
  writes.length = 0
  failWith = undefined
})

/** An auth client that adds no credentials: the fake needs none, and no Google endpoint is ever asked. */
const noAuth = {
  getRequestHeaders: async () => new Headers(),
  fetch: (url: string | URL, init: RequestInit) => fetch(url, init)
} as unknown as NonNullable<AuditLog.GcpClientOptions["authClient"]>

const gcpSink = (options: Partial<AuditLog.GcpSinkOptions> = {}) =>
  AuditLog.gcpSink({
    projectId: project,
    resource: { type: "global" },
    client: { fallback: true, apiEndpoint: "127.0.0.1", port, protocol: "http", authClient: noAuth },
    ...options
  })

/** The audit entries the fake received (the client adds a diagnostic entry to its first request). */
const received = () =>
  writes.flatMap((w) =>
    (w.json.entries as Array<any>).filter((e) => e.jsonPayload?.chain !== undefined).map((e) => ({
      ...e,
      logName: e.logName ?? w.json.logName,
      resource: e.resource ?? w.json.resource
    }))
  )

describe("gcp sink", () => {
  it.live("writes each record as the jsonPayload of an entries:write entry with severity, labels and trace", () =>
    Effect.gen(function*() {
      const memory = sharedMemory()
      const traceId = yield* Effect.scoped(Effect.gen(function*() {
        const sink = yield* gcpSink()
        const both: AuditLog.AuditSink = {
          name: "gcp",
          write: (r) => {
            memory.write(r)
            sink.write(r)
          }
        }
        const log = yield* AuditLog.make(both)
        const traceId = yield* Effect.withSpan(
          Effect.zipRight(
            log.record(entry("acme", 1, { outcome: "ok" })),
            Effect.map(Effect.currentSpan, (s) => s.traceId)
          ),
          "Connection.Invoke"
        )
        yield* log.record(entry("acme", 2, { outcome: "failed" }))
        yield* log.record(entry("globex", 4, { action: "authz.failure", outcome: "denied" }))
        yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) => log.record(entry("initech", i)), {
          concurrency: "unbounded",
          discard: true
        })
        return traceId
      }))
      // closing the scope flushed everything
      expect(writes.length).toBeGreaterThanOrEqual(1)
      expect(writes.every((w) => w.path === "/v2/entries:write" && w.authorization === undefined)).toBe(true)
      expect(writes.every((w) => w.json.logName === `projects/${project}/logs/altan-audit`)).toBe(true)
      expect(writes[0]!.json.resource).toMatchObject({ type: "global" })
      const entries = received()
      expect(entries).toHaveLength(53)
      const [ok, failed, denied] = entries
      expect(ok.jsonPayload).toEqual(memory.records()[0])
      expect(ok.labels).toEqual({ tenant_id: "acme", action: "tool.invoke", outcome: "ok" })
      expect(ok.trace).toBe(`projects/${project}/traces/${traceId}`)
      // the REST client sends enums as numbers: INFO 200, NOTICE 300, WARNING 400
      expect([ok.severity, failed.severity, denied.severity]).toEqual([200, 400, 300])
      expect(failed.trace).toBeUndefined()
      expect(denied.labels).toEqual({ tenant_id: "globex", action: "authz.failure", outcome: "denied" })
      expect(ok.timestamp).toBe(ok.jsonPayload.time)
      expect(writes[0]!.json.partialSuccess).toBe(true)
      // what Cloud Logging stored verifies
      const result = AuditLog.verify(entries)
      expect(result.ok).toBe(true)
      expect(result.chains.map((c) => c.records).sort((a, b) => a - b)).toEqual([1, 2, 50])
    }))

  it.live("a refused batch is logged and counted, never the caller's failure", () =>
    Effect.gen(function*() {
      failWith = { status: 403, code: "PERMISSION_DENIED" }
      const failures = Metric.tagged(Metrics.auditSinkFailures, "sink", "gcp")
      const before = (yield* Metric.value(failures)).count
      const [, refused] = yield* collectingLogs(Effect.scoped(Effect.gen(function*() {
        const log = yield* AuditLog.make(yield* gcpSink({ logName: "other-log" }))
        for (let i = 0; i < 3; i++) expect(Exit.isSuccess(yield* Effect.exit(log.record(entry("acme", i))))).toBe(true)
      })))
      expect((yield* Metric.value(failures)).count - before).toBe(3)
      expect(writes).toEqual([])
      expect(refused.length).toBeGreaterThanOrEqual(1)
      expect(refused.every((l) => l.startsWith("WARN audit: Cloud Logging did not take"))).toBe(true)
      expect(refused.join("\n")).toContain("The caller does not have permission")

      // a full buffer drops (and counts) instead of blocking
      failWith = undefined
      const memory = sharedMemory()
      const [, dropped] = yield* collectingLogs(Effect.scoped(Effect.gen(function*() {
        const sink = yield* gcpSink({ logName: "other-log", capacity: 1, maxBatch: 1 })
        const log = yield* AuditLog.make({
          name: "gcp",
          write: (r) => {
            memory.write(r)
            sink.write(r)
          }
        })
        for (let i = 0; i < 20; i++) yield* log.record(entry("acme", i))
      })))
      expect(dropped.length).toBeGreaterThan(0)
      expect(dropped.every((l) => /^WARN audit: the gcp sink lost record acme\/\w+ #\d+ .*buffer full/.test(l))).toBe(
        true
      )
      const names = received().map((e) => e.logName)
      expect(names.every((n) => n === `projects/${project}/logs/other-log`)).toBe(true)
      expect(names.length).toBeLessThan(20)
      expect((yield* Metric.value(failures)).count - before).toBe(3 + 20 - names.length)
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

describe("layerFromConfig", () => {
  const withEnv = (env: Record<string, string>) =>
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

  it.effect("reads AUDIT_SINK (stdout by default), AUDIT_LOG_NAME and the project", () =>
    Effect.gen(function*() {
      expect(yield* AuditLog.loadConfig.pipe(withEnv({}))).toEqual({ sink: "stdout", projectId: undefined })
      expect(yield* AuditLog.loadConfig.pipe(withEnv({ GOOGLE_CLOUD_PROJECT: "p1" }))).toEqual({
        sink: "stdout",
        projectId: "p1"
      })
      expect(yield* AuditLog.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp", GCP_PROJECT: "p2" }))).toEqual({
        sink: "gcp",
        projectId: "p2",
        logName: "altan-audit"
      })
      expect(
        yield* AuditLog.loadConfig.pipe(
          withEnv({ AUDIT_SINK: "gcp", GOOGLE_CLOUD_PROJECT: "p3", AUDIT_LOG_NAME: "audit" })
        )
      ).toEqual({ sink: "gcp", projectId: "p3", logName: "audit" })
      expect(yield* AuditLog.loadConfig.pipe(withEnv({ AUDIT_SINK: "none" }))).toEqual({ sink: "none" })

      const noProject = yield* Effect.flip(AuditLog.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp" })))
      expect(String(noProject)).toContain("GCP_PROJECT")
      const badName = yield* Effect.flip(
        AuditLog.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp", GCP_PROJECT: "p", AUDIT_LOG_NAME: "a/b" }))
      )
      expect(String(badName)).toContain("AUDIT_LOG_NAME")
      const unknown = yield* Effect.flip(AuditLog.loadConfig.pipe(withEnv({ AUDIT_SINK: "syslog" })))
      expect(String(unknown)).toContain("AUDIT_SINK")

      // the configured layer records: with the stdout sink, one structured line per record
      const lines: Array<string> = []
      const write = process.stdout.write
      process.stdout.write = ((chunk: unknown) => (lines.push(String(chunk)), true)) as typeof process.stdout.write
      try {
        yield* record(entry("acme", 1)).pipe(
          Effect.provide(AuditLog.layerFromConfig),
          withEnv({ AUDIT_SINK: "stdout" })
        )
      } finally {
        process.stdout.write = write
      }
      const audited = lines.map((l) => JSON.parse(l)).filter((l) => l.audit !== undefined)
      expect(audited).toHaveLength(1)
      expect(audited[0].audit).toMatchObject({ tenant_id: "acme", seq: 1 })
      const failed = yield* Effect.exit(
        record(entry("acme", 1)).pipe(Effect.provide(AuditLog.layerFromConfig), withEnv({ AUDIT_SINK: "gcp" }))
      )
      expect(Exit.isFailure(failed)).toBe(true)
    }))
})
