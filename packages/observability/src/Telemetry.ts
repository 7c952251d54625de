/**
 * Traces and metrics of a runner process. Spans are recorded by Effect's tracer everywhere (the services' `withSpan`s,
 * the cluster's entity clients and handlers, the edge's HTTP server); the trace context travels with every entity
 * message, persisted ones included, so a task is one trace across the integrator, agent and tool runners. With
 * `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans and metrics are exported over OTLP/HTTP by the OpenTelemetry JS
 * exporters through `@effect/opentelemetry`; unset, nothing is exported and the tracer stays Effect's own.
 * Every process serves its metrics as Prometheus text, and its health, on the operator port (`OperatorServer`).
 */
import * as Metrics from "@effect/opentelemetry/Metrics"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as Resource from "@effect/opentelemetry/Resource"
import * as Tracer from "@effect/opentelemetry/Tracer"
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
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { TelemetryConfig } from "./TelemetryConfig.js"

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
export class PrometheusMetrics extends Context.Tag("@altan/observability/PrometheusMetrics")<PrometheusMetrics, {
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
