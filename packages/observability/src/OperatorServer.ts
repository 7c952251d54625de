import * as Readiness from "@altan/domain/Readiness"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import { PrometheusMetrics } from "./Telemetry.js"
import { TelemetryConfig } from "./TelemetryConfig.js"

/** `GET /readyz` on the operator port: the runner's dependencies, as the API's `/readyz` checks them. */
const readyz = Effect.flatMap(Readiness.run, (results) => {
  const checks = Object.fromEntries(results)
  const ready = results.every(([, r]) => r === "ok")
  return HttpServerResponse.json({ status: ready ? "ok" : "unavailable", checks }, { status: ready ? 200 : 503 })
})

/**
 * The operator port (`METRICS_PORT`, on `host`), served by every runner whatever its role and never on the public
 * API's port: `GET /metrics` (Prometheus text), `GET /healthz` (the process answers) and `GET /readyz` (its cluster
 * storage and Redis answer), for the metrics scraper and the probes. Its requests record no spans.
 */
export const layer = (
  host: string
): Layer.Layer<never, never, TelemetryConfig | PrometheusMetrics | Readiness.Readiness> =>
  Layer.unwrapEffect(Effect.map(TelemetryConfig, ({ metricsPort }) => {
    const routes = HttpRouter.empty.pipe(
      HttpRouter.get(
        "/metrics",
        Effect.flatMap(PrometheusMetrics, ({ scrape }) => scrape).pipe(
          Effect.map((text) =>
            HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
          )
        )
      ),
      HttpRouter.get("/healthz", HttpServerResponse.json({ status: "ok" })),
      HttpRouter.get("/readyz", readyz)
    )
    const server = NodeHttpServer.layerServer(createServer, { port: metricsPort, host })
    const announce = Layer.effectDiscard(
      Effect.flatMap(HttpServer.HttpServer, ({ address }) =>
        Effect.logInfo(
          `operator endpoints (/metrics, /healthz, /readyz) on ${
            address._tag === "TcpAddress" ? `${address.hostname}:${address.port}` : address.path
          }`
        ))
    )
    return Layer.merge(HttpServer.serve(routes), announce).pipe(
      HttpMiddleware.withTracerDisabledWhen(() => true),
      Layer.provide(server),
      Layer.orDie
    )
  }))
