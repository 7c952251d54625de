import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import { gcpLogger, jsonLogger } from "../src/Logging.js"

describe("log lines", () => {
  const capture = (logger: Logger.Logger<unknown, string>) => {
    const lines: Array<any> = []
    const layer = Logger.replace(Logger.defaultLogger, Logger.map(logger, (line) => void lines.push(JSON.parse(line))))
    return { lines, layer }
  }

  it.effect("JSON lines carry the trace and span of the span they were written in", () =>
    Effect.gen(function*() {
      const { layer, lines } = capture(jsonLogger)
      const span = yield* Effect.gen(function*() {
        yield* Effect.log("inside")
        return yield* Effect.currentSpan
      }).pipe(Effect.withSpan("work"), Effect.provide(layer))
      yield* Effect.log("outside").pipe(Effect.provide(layer))
      expect(lines[0]).toMatchObject({
        message: "inside",
        logLevel: "INFO",
        trace_id: span.traceId,
        span_id: span.spanId
      })
      expect(lines[1].message).toBe("outside")
      expect(lines[1].trace_id).toBeUndefined()
    }))

  it.effect("LOG_FORMAT=gcp: severity and Cloud Logging's trace fields", () =>
    Effect.gen(function*() {
      const { layer, lines } = capture(gcpLogger(Option.some("my-project")))
      const span = yield* Effect.gen(function*() {
        yield* Effect.logWarning("careful").pipe(Effect.annotateLogs("altan.tenant_id", "acme"))
        return yield* Effect.currentSpan
      }).pipe(Effect.withSpan("work"), Effect.provide(layer))
      expect(lines[0]).toMatchObject({
        severity: "WARNING",
        message: "careful",
        annotations: { "altan.tenant_id": "acme" },
        "logging.googleapis.com/trace": `projects/my-project/traces/${span.traceId}`,
        "logging.googleapis.com/spanId": span.spanId,
        "logging.googleapis.com/trace_sampled": true
      })
    }))
})
