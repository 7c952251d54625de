import * as Metrics from "@altan/domain/Metrics"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as AuditLog from "../src/AuditLog.js"
import * as GcpSink from "../src/GcpSink.js"
import * as MemorySink from "../src/MemorySink.js"
import { verify } from "../src/Verify.js"
import { collectingLogs, entry } from "./utils.js"

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
} as unknown as NonNullable<GcpSink.ClientOptions["authClient"]>

const gcpSink = (options: Partial<GcpSink.Options> = {}) =>
  GcpSink.make({
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
      const memory = MemorySink.make()
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
      const result = verify(entries)
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
      const memory = MemorySink.make()
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
