import * as Readiness from "@altan/domain/Readiness"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as OperatorServer from "../src/OperatorServer.js"
import { PrometheusMetrics } from "../src/Telemetry.js"
import { TelemetryConfig } from "../src/TelemetryConfig.js"

const config: TelemetryConfig["Type"] = {
  ...TelemetryConfig.defaults,
  endpoint: Option.none(),
  headers: Redacted.make({}),
  serviceName: "altan-test",
  resourceAttributes: {},
  // a free port, announced in the log
  metricsPort: 0
}

describe("OperatorServer", () => {
  it.scopedLive("serves /metrics, /healthz and /readyz (503 naming the failing check) on the operator port", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const capture = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => void logged.push(Array.isArray(message) ? message.join(" ") : String(message)))
      )
      yield* Layer.build(
        OperatorServer.layer("127.0.0.1").pipe(
          Layer.provide(Layer.succeed(TelemetryConfig, config)),
          Layer.provide(Layer.succeed(PrometheusMetrics, { scrape: Effect.succeed("altan_up 1\n") })),
          Layer.provide(Readiness.layer([["storage", Effect.void], ["redis", Effect.fail("connection refused")]])),
          Layer.provide(capture)
        )
      )
      const address = logged.map((line) => /^operator endpoints .* on (127\.0\.0\.1:\d+)$/.exec(line)?.[1]).find(
        Boolean
      )
      expect(address).toBeDefined()
      const get = (path: string) =>
        Effect.promise(async () => {
          const res = await fetch(`http://${address}${path}`)
          return { status: res.status, type: res.headers.get("content-type"), body: await res.text() }
        })

      expect(yield* get("/metrics")).toEqual({
        status: 200,
        type: "text/plain; version=0.0.4; charset=utf-8",
        body: "altan_up 1\n"
      })
      const health = yield* get("/healthz")
      expect([health.status, JSON.parse(health.body)]).toEqual([200, { status: "ok" }])
      const ready = yield* get("/readyz")
      expect([ready.status, JSON.parse(ready.body)]).toEqual([
        503,
        { status: "unavailable", checks: { storage: "ok", redis: "connection refused" } }
      ])
    }))
})
