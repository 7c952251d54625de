import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { TelemetryConfig } from "../src/TelemetryConfig.js"

describe("TelemetryConfig", () => {
  const load = (env: Record<string, string>, role: Parameters<typeof TelemetryConfig.config>[0] = "agent") =>
    Effect.runSync(
      Effect.either(
        Effect.withConfigProvider(TelemetryConfig.config(role), ConfigProvider.fromMap(new Map(Object.entries(env))))
      )
    )

  it("defaults: no export, the role's service name, the standard sampler, port 9464", () => {
    const config = Either.getOrThrow(load({}))
    expect(config).toMatchObject({
      endpoint: Option.none(),
      protocol: "http/protobuf",
      serviceName: "altan-agent",
      resourceAttributes: {},
      sampler: "parentbased_always_on",
      samplerArg: 1,
      metricsPort: 9464
    })
    expect(Redacted.value(config.headers)).toEqual({})
    expect(["all", "agent", "tool", "integrator"].map((r) => Either.getOrThrow(load({}, r as any)).serviceName))
      .toEqual(["altan", "altan-agent", "altan-tool", "altan-integrator"])
  })

  it("reads the standard variables, percent-decoding headers and resource attributes", () => {
    const config = Either.getOrThrow(load({
      OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example:4318/",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20abc, x-scope = team-1",
      OTEL_SERVICE_NAME: "my-agent",
      OTEL_RESOURCE_ATTRIBUTES: "k8s.pod.name=altan-agent-0,note=a%2Cb",
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
      OTEL_METRIC_EXPORT_INTERVAL: "15000",
      METRICS_PORT: "9100"
    }))
    expect(config).toMatchObject({
      endpoint: Option.some("https://collector.example:4318"),
      protocol: "http/json",
      serviceName: "my-agent",
      resourceAttributes: { "k8s.pod.name": "altan-agent-0", note: "a,b" },
      sampler: "parentbased_traceidratio",
      samplerArg: 0.25,
      metricsPort: 9100
    })
    expect(Redacted.value(config.headers)).toEqual({ authorization: "Bearer abc", "x-scope": "team-1" })
    // the headers never print
    expect(String(config.headers)).not.toContain("abc")
    expect(
      Option.isNone(
        Either.getOrThrow(load({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" })).endpoint
      )
    )
      .toBe(true)
  })

  it("refuses what it cannot honour", () => {
    for (
      const env of [
        { OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
        { OTEL_TRACES_SAMPLER: "sometimes" },
        { OTEL_TRACES_SAMPLER_ARG: "2" },
        { OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" },
        { OTEL_EXPORTER_OTLP_HEADERS: "novalue" },
        { METRICS_PORT: "70000" }
      ]
    ) {
      expect(Either.isLeft(load(env)), JSON.stringify(env)).toBe(true)
    }
  })
})
