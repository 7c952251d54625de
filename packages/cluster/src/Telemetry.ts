/**
 * Traces and metrics of a runner process. Spans are recorded by Effect's tracer everywhere (the services' `withSpan`s,
 * the cluster's entity clients and handlers, the edge's HTTP server); the trace context travels with every entity
 * message, persisted ones included, so a task is one trace across the integrator, agent and tool runners. With
 * `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans and metrics are exported over OTLP/HTTP by the OpenTelemetry JS
 * exporters through `@effect/opentelemetry`; unset, nothing is exported and the tracer stays Effect's own.
 * Every process serves its metrics as Prometheus text, and its health, on the operator port (`METRICS_PORT`).
 */
import * as Readiness from "@altan/domain/Readiness"
import * as Metrics from "@effect/opentelemetry/Metrics"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as Resource from "@effect/opentelemetry/Resource"
import * as Tracer from "@effect/opentelemetry/Tracer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { OTLPMetricExporter as JsonMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { OTLPMetricExporter as ProtobufMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { OTLPTraceExporter as JsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { OTLPTraceExporter as ProtobufTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto"
import { type MetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { createServer } from "node:http"
import type { Role } from "./RuntimeConfig.js"

/** `OTEL_TRACES_SAMPLER` values (the OpenTelemetry SDK's). */
export const samplers = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
] as const
export type SamplerName = typeof samplers[number]

/**
 * How this process exports its telemetry, read from the standard OpenTelemetry variables (see README
 * "Observability"). The OTLP headers may hold a backend's API key: they are kept redacted.
 */
export class TelemetryConfig extends Context.Tag("@altan/cluster/TelemetryConfig")<TelemetryConfig, {
  /**
   * `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL of an OTLP/HTTP receiver; spans go to `<endpoint>/v1/traces`, metrics to
   * `<endpoint>/v1/metrics`. None (unset, or `OTEL_SDK_DISABLED=true`): nothing is exported.
   */
  readonly endpoint: Option.Option<string>
  /** `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or `http/json`. */
  readonly protocol: "http/protobuf" | "http/json"
  /** `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs, comma-separated (values percent-encoded), sent with exports. */
  readonly headers: Redacted.Redacted<Readonly<Record<string, string>>>
  /** `OTEL_SERVICE_NAME`: default `altan-<role>` (`altan-agent`, `altan-tool`, `altan-integrator`), `altan` for `all`. */
  readonly serviceName: string
  /** `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs, comma-separated (values percent-encoded), on every span and metric. */
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`) and its ratio `OTEL_TRACES_SAMPLER_ARG` (default 1). */
  readonly sampler: SamplerName
  readonly samplerArg: number
  /** `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, default 60000): how often metrics are exported over OTLP. */
  readonly metricExportInterval: Duration.Duration
  /** `METRICS_PORT` (default 9464; 0 picks a free one): the operator port with `/metrics`, `/healthz`, `/readyz`. */
  readonly metricsPort: number
}>() {
  /** The service name of a role: `altan-agent`, `altan-tool`, `altan-integrator`, or `altan` for all of them. */
  static readonly serviceNameOf = (role: Role) => (role === "all" ? "altan" : `altan-${role}`)

  static readonly config = (role: Role): Config.Config<TelemetryConfig["Type"]> =>
    Config.all({
      endpoint: Config.all([
        Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_ENDPOINT")),
        Config.boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false))
      ]).pipe(
        Config.mapOrFail(([endpoint, disabled]) => {
          if (disabled || Option.isNone(endpoint)) return Either.right(Option.none())
          const base = endpoint.value.trim().replace(/\/+$/, "")
          return /^https?:\/\/[^/]/.test(base) && URL.canParse(base)
            ? Either.right(Option.some(base))
            : Either.left(
              ConfigError.InvalidData(["OTEL_EXPORTER_OTLP_ENDPOINT"], "expected an http(s) URL of an OTLP receiver")
            )
        })
      ),
      protocol: Config.literal("http/protobuf", "http/json")("OTEL_EXPORTER_OTLP_PROTOCOL").pipe(
        Config.withDefault("http/protobuf" as const)
      ),
      headers: pairs("OTEL_EXPORTER_OTLP_HEADERS").pipe(Config.map(Redacted.make)),
      serviceName: Config.nonEmptyString("OTEL_SERVICE_NAME").pipe(
        Config.withDefault(TelemetryConfig.serviceNameOf(role))
      ),
      resourceAttributes: pairs("OTEL_RESOURCE_ATTRIBUTES"),
      sampler: Config.literal(...samplers)("OTEL_TRACES_SAMPLER").pipe(
        Config.withDefault("parentbased_always_on" as const)
      ),
      samplerArg: Config.number("OTEL_TRACES_SAMPLER_ARG").pipe(
        Config.withDefault(1),
        Config.validate({ message: "expected a ratio between 0 and 1", validation: (n) => n >= 0 && n <= 1 })
      ),
      metricExportInterval: Config.integer("OTEL_METRIC_EXPORT_INTERVAL").pipe(
        Config.withDefault(60_000),
        Config.validate({ message: "expected a positive number of milliseconds", validation: (n) => n > 0 }),
        Config.map(Duration.millis)
      ),
      metricsPort: Config.integer("METRICS_PORT").pipe(
        Config.withDefault(9464),
        Config.validate({ message: "expected a port (0 picks a free one)", validation: (n) => n >= 0 && n < 65536 })
      )
    })

  static readonly layerConfig = (role: Role): Layer.Layer<TelemetryConfig, ConfigError.ConfigError> =>
    Layer.effect(TelemetryConfig, TelemetryConfig.config(role))
}

/** `key=value,key=value` (the W3C baggage-like format of the OpenTelemetry variables), values percent-decoded. */
const pairs = (name: string): Config.Config<Readonly<Record<string, string>>> =>
  Config.string(name).pipe(
    Config.withDefault(""),
    Config.mapOrFail((raw) => {
      const out: Record<string, string> = {}
      for (const entry of raw.split(",")) {
        if (entry.trim() === "") continue
        const eq = entry.indexOf("=")
        const key = eq > 0 ? entry.slice(0, eq).trim() : ""
        if (key === "") return Either.left(ConfigError.InvalidData([name], "expected key=value pairs"))
        try {
          out[key] = decodeURIComponent(entry.slice(eq + 1).trim())
        } catch {
          return Either.left(ConfigError.InvalidData([name], `the value of ${key} is not percent-encoded`))
        }
      }
      return Either.right(out)
    })
  )

const samplerOf = (config: TelemetryConfig["Type"]): Sampler => {
  switch (config.sampler) {
    case "always_on":
      return new AlwaysOnSampler()
    case "always_off":
      return new AlwaysOffSampler()
    case "traceidratio":
      return new TraceIdRatioBasedSampler(config.samplerArg)
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() })
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.samplerArg) })
  }
}

/** This process's metrics (Effect's metric registry) as Prometheus text, for `GET /metrics`. */
export class PrometheusMetrics extends Context.Tag("@altan/cluster/PrometheusMetrics")<PrometheusMetrics, {
  readonly scrape: Effect.Effect<string>
}>() {}

/** How long exporters may take to flush what they hold when the process stops. */
const shutdownTimeout = Duration.seconds(5)

/**
 * The tracer and the metric readers: always the Prometheus reader behind `PrometheusMetrics`; with an endpoint, the
 * OpenTelemetry tracer (batched OTLP export of sampled spans) and a periodic OTLP metric export as well. Provide it
 * below everything else, so every fiber of the process records into it; it flushes when its scope closes.
 */
export const layer: Layer.Layer<PrometheusMetrics, never, TelemetryConfig> = Layer.unwrapEffect(
  Effect.map(TelemetryConfig, (config) => {
    const prometheus = new PrometheusExporter({ preventServerStart: true })
    // no `otel_scope_name` label on every series: every metric here is Effect's
    const serializer = new PrometheusSerializer(undefined, undefined, undefined, undefined, true)
    const scrape = Layer.succeed(PrometheusMetrics, {
      scrape: Effect.promise(() => prometheus.collect()).pipe(
        Effect.map(({ resourceMetrics }) => serializer.serialize(resourceMetrics))
      )
    })
    const resource = Resource.layer({ serviceName: config.serviceName, attributes: config.resourceAttributes })
    // the exporter package pins its own release of sdk-metrics, whose MetricReader is another declaration of the class
    const readers: Array<MetricReader> = [prometheus as unknown as MetricReader]
    if (Option.isNone(config.endpoint)) {
      return Layer.merge(scrape, Metrics.layer(() => readers as [MetricReader])).pipe(Layer.provide(resource))
    }
    const headers = { ...Redacted.value(config.headers) }
    const json = config.protocol === "http/json"
    const traces = { url: `${config.endpoint.value}/v1/traces`, headers }
    const metrics = { url: `${config.endpoint.value}/v1/metrics`, headers }
    const spans = new BatchSpanProcessor(json ? new JsonTraceExporter(traces) : new ProtobufTraceExporter(traces))
    readers.push(
      new PeriodicExportingMetricReader({
        exporter: json ? new JsonMetricExporter(metrics) : new ProtobufMetricExporter(metrics),
        exportIntervalMillis: Duration.toMillis(config.metricExportInterval),
        exportTimeoutMillis: Math.min(30_000, Duration.toMillis(config.metricExportInterval))
      })
    )
    const tracing = Tracer.layer.pipe(
      Layer.provide(NodeSdk.layerTracerProvider(spans, { sampler: samplerOf(config), shutdownTimeout }))
    )
    return Layer.mergeAll(
      scrape,
      Metrics.layer(() => readers as [MetricReader], { shutdownTimeout }),
      Layer.effectDiscard(Effect.void).pipe(Layer.provide(tracing))
    ).pipe(Layer.provide(resource))
  })
)

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
export const layerOperatorServer = (
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
