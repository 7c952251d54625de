import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as AuditLog from "../src/AuditLog.js"
import * as StdoutSink from "../src/StdoutSink.js"
import { verify } from "../src/Verify.js"
import { entry } from "./utils.js"

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
            const log = yield* AuditLog.make(StdoutSink.make({ projectId: "altan-test" }))
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
      expect(verify([ok, failed, denied]).ok).toBe(true)
      // without a project, the bare trace id
      expect(StdoutSink.structuredLogLine(ok.audit)["logging.googleapis.com/trace"]).toBe(traceId)
    }))
})
