import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"

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
export class TelemetryConfig extends Context.Tag("@altan/observability/TelemetryConfig")<TelemetryConfig, {
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
  /**
   * The service name of a runner role (`ROLE`): `altan-agent`, `altan-tool`, `altan-integrator`, or `altan` for
   * `all` of them.
   */
  static readonly serviceNameOf = (role: string) => (role === "all" ? "altan" : `altan-${role}`)

  /** What applies when a variable is not set; the service name follows the role (`serviceNameOf`). */
  static readonly defaults = {
    protocol: "http/protobuf",
    sampler: "parentbased_always_on",
    samplerArg: 1,
    metricExportInterval: Duration.minutes(1),
    metricsPort: 9464
  } as const

  /** Reads the variables above for a runner of `role`. */
  static readonly config = (role: string): Config.Config<TelemetryConfig["Type"]> =>
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
        Config.withDefault(TelemetryConfig.defaults.protocol)
      ),
      headers: pairs("OTEL_EXPORTER_OTLP_HEADERS").pipe(Config.map(Redacted.make)),
      serviceName: Config.nonEmptyString("OTEL_SERVICE_NAME").pipe(
        Config.withDefault(TelemetryConfig.serviceNameOf(role))
      ),
      resourceAttributes: pairs("OTEL_RESOURCE_ATTRIBUTES"),
      sampler: Config.literal(...samplers)("OTEL_TRACES_SAMPLER").pipe(
        Config.withDefault(TelemetryConfig.defaults.sampler)
      ),
      samplerArg: Config.number("OTEL_TRACES_SAMPLER_ARG").pipe(
        Config.withDefault(TelemetryConfig.defaults.samplerArg),
        Config.validate({ message: "expected a ratio between 0 and 1", validation: (n) => n >= 0 && n <= 1 })
      ),
      metricExportInterval: Config.integer("OTEL_METRIC_EXPORT_INTERVAL").pipe(
        Config.validate({ message: "expected a positive number of milliseconds", validation: (n) => n > 0 }),
        Config.map(Duration.millis),
        Config.withDefault(TelemetryConfig.defaults.metricExportInterval)
      ),
      metricsPort: Config.integer("METRICS_PORT").pipe(
        Config.withDefault(TelemetryConfig.defaults.metricsPort),
        Config.validate({ message: "expected a port (0 picks a free one)", validation: (n) => n >= 0 && n < 65536 })
      )
    })

  /** The config of a runner of `role`, from the environment. */
  static readonly layerConfig = (role: string): Layer.Layer<TelemetryConfig, ConfigError.ConfigError> =>
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
