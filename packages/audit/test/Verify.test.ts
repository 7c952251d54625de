import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { recordHash } from "../src/AuditChain.js"
import type { AuditRecord } from "../src/AuditLog.js"
import { structuredLogLine } from "../src/StdoutSink.js"
import * as Verify from "../src/Verify.js"
import { chainOf, written } from "./utils.js"

const root = fileURLToPath(new URL("../../..", import.meta.url))

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
  ({ ...r, hash: recordHash(r) }) as AuditRecord

// ---------------------------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------------------------

describe("verify", () => {
  it.effect("names the first broken link of each chain", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const globex = all.find((r) => r.tenant_id === "globex")!.chain
      expect(Verify.verify(all).ok).toBe(true)

      // a field changed in place: that record's own hash no longer matches
      const flipped = tamper(all, acme, 3, (r) => ({ ...r, outcome: r.outcome === "failed" ? "ok" : "failed" }))
      expect(chainOf(all, acme)[2]!.outcome).toBe("failed")
      const a = Verify.verify(flipped)
      expect(a.ok).toBe(false)
      expect(a.breaks).toEqual([{ chain: acme, seq: 3, reason: "hash mismatch", index: expect.any(Number) }])
      expect(flipped[a.breaks[0]!.index!]).toMatchObject({ chain: acme, seq: 3, outcome: "ok" })
      expect(a.chains.filter((c) => !c.ok).map((c) => c.chain)).toEqual([acme])

      // a record deleted
      const deleted = Verify.verify(tamper(all, acme, 5, () => undefined))
      expect(deleted.breaks).toEqual([{ chain: acme, seq: 5, reason: "missing seq 5", index: undefined }])
      // the first one deleted too
      expect(Verify.verify(tamper(all, globex, 1, () => undefined)).breaks).toMatchObject([{
        chain: globex,
        seq: 1,
        reason: "missing seq 1"
      }])

      // changed and re-hashed: the next record's prev_hash gives it away
      const rehashed = tamper(all, acme, 4, (r) => rehash({ ...r, outcome: "ok", latency_ms: 1 }))
      expect(Verify.verify(rehashed).breaks).toMatchObject([{ chain: acme, seq: 5, reason: "prev_hash mismatch" }])

      // prev_hash rewritten (e.g. to hide a deleted record) and re-hashed: broken at that record
      const relinked = tamper(
        tamper(all, acme, 6, () => undefined),
        acme,
        7,
        (r) => rehash({ ...r, seq: 6, prev_hash: chainOf(all, acme)[5]!.hash })
      )
      expect(Verify.verify(relinked).breaks).toMatchObject([{ chain: acme, seq: 6, reason: "prev_hash mismatch" }])

      // two chains broken at once: one break each, in chain order
      const both = Verify.verify(tamper(flipped, globex, 2, (r) => ({ ...r, target: "tool:other" })))
      expect(both.breaks.map((b) => [b.chain, b.seq, b.reason])).toEqual([
        [acme, 3, "hash mismatch"],
        [globex, 2, "hash mismatch"]
      ])

      // a forged record in place of an existing seq
      const forged = rehash({ ...chainOf(all, globex)[3]!, target: "tool:forged" })
      expect(Verify.verify([...all, forged]).breaks).toMatchObject([{
        chain: globex,
        seq: 4,
        reason: "duplicate seq"
      }])
      // an entry delivered twice is not a break; order does not matter
      expect(Verify.verify([...all, ...all.slice(0, 5)].reverse()).ok).toBe(true)
    }))

  it.effect("reports malformed records and lines, attributed to their chain when they name one", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const { seq: _seq, ...noSeq } = chainOf(all, acme)[1]!
      const badSeq = { ...chainOf(all, acme)[1]!, seq: "2" }
      expect(Verify.verify(all.map((r) => (r.chain === acme && r.seq === 2 ? noSeq : r))).breaks).toMatchObject([{
        chain: acme,
        reason: "malformed record"
      }])
      expect(Verify.verify(all.map((r) => (r.chain === acme && r.seq === 2 ? badSeq : r))).breaks).toMatchObject([{
        chain: acme,
        reason: "malformed record"
      }])
      const shortHash = tamper(all, acme, 2, (r) => ({ ...r, hash: "abc" }))
      expect(Verify.verify(shortHash).breaks).toMatchObject([{ chain: acme, seq: 2, reason: "malformed record" }])

      // a line claiming to be a record (it has a hash) but naming no chain is malformed, wherever it is
      const text = [...all.map((r) => JSON.stringify(r)), "{\"hash\": \"abc\"}", ""].join("\n")
      const items = Verify.parseExport(text)
      const result = Verify.verify(items.map((i) => i.value))
      expect(result.ok).toBe(false)
      expect(result.breaks).toEqual([{ chain: "(unknown)", seq: undefined, reason: "malformed record", index: 24 }])
      expect(items[24]!.where).toBe("line 25")
      expect(Verify.formatReport(result, (i) => items[i]!.where)).toContain(
        "BROKEN (unknown) at seq ?: malformed record (line 25)"
      )
    }))

  it.effect("skips log lines interleaved with the stdout sink's records, and still sees a record replaced by one", () =>
    Effect.gen(function*() {
      const all = yield* written
      const logs = [
        `timestamp=2026-12-06T00:00:00.000Z level=INFO fiber=#1 message="Altan API listening on http://localhost:8080"`,
        JSON.stringify({ level: "WARN", message: "tool call failed", "tenant.id": "acme" }),
        ""
      ]
      const mixed = all.flatMap((r, i) => [JSON.stringify(r), ...(i % 3 === 0 ? logs : [])]).join("\n")
      const items = Verify.parseExport(mixed)
      const result = Verify.verify(items.map((i) => i.value))
      expect(result.ok).toBe(true)
      expect(result.records).toBe(all.length)
      expect(result.skipped).toBe(Math.ceil(all.length / 3) * 2)
      expect(Verify.formatReport(result)).toContain(`other lines skipped`)
      // a record swapped for a log line: its chain misses it
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const swapped = all.map((r) => (r.chain === acme && r.seq === 2 ? logs[0] : JSON.stringify(r))).join("\n")
      const broken = Verify.verify(Verify.parseExport(swapped).map((i) => i.value))
      expect(broken.breaks).toMatchObject([{ chain: acme, reason: "missing seq 2" }])
    }))

  it.effect("reads stdout lines, Cloud Logging entries and gcloud's JSON arrays; --partial accepts a window", () =>
    Effect.gen(function*() {
      const all = yield* written
      const lines = all.map((r) => structuredLogLine(r, "p"))
      expect(Verify.verify(lines).ok).toBe(true)
      // the logging agent keeps `audit` inside jsonPayload; the API sink's payload is the record
      const exported = [...lines.map((l) => ({ jsonPayload: { audit: (l as any).audit } })), ...[]]
      expect(Verify.verify(exported).ok).toBe(true)
      const fromApi = all.map((r) => ({ logName: "projects/p/logs/altan-audit", jsonPayload: r, severity: "INFO" }))
      const array = Verify.parseExport(JSON.stringify(fromApi, null, 2))
      expect(array).toHaveLength(24)
      expect(array[0]!.where).toBe("entry 1")
      expect(Verify.verify(array.map((i) => i.value)).ok).toBe(true)

      const window = all.filter((r) => r.seq > 3)
      expect(Verify.verify(window).breaks.map((b) => b.reason)).toEqual([
        "missing seq 1",
        "missing seq 1",
        "missing seq 1"
      ])
      expect(Verify.verify(window, { partial: true }).ok).toBe(true)
      expect(Verify.verify(window.filter((r) => r.seq !== 6), { partial: true }).breaks).toHaveLength(3)
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
      "packages/audit/src/bin/audit-verify.ts",
      ...args
    ], { cwd: root, encoding: "utf8", input: input ?? "", timeout: 60_000 })

  it.effect("exits 0 on intact chains, 1 naming chain and seq on a tampered file, 2 on an unreadable one", () =>
    Effect.gen(function*() {
      const all = yield* written
      const acme = all.find((r) => r.tenant_id === "acme")!.chain
      const good = join(dir, "good.jsonl")
      writeFileSync(good, all.map((r) => JSON.stringify(structuredLogLine(r))).join("\n") + "\n")
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
