import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import { parseHostRule } from "./EgressPolicy.js"

/** Settings of the egress guard. */
export interface EgressSettings {
  /**
   * `EGRESS_ALLOW_HOSTS`: `host` or `host:port` entries the operator vouches for. The only way to reach
   * loopback or private addresses (local fakes); they also pass every tenant allowlist.
   */
  readonly operatorAllowHosts: ReadonlyArray<string>
  /** `EGRESS_CONNECT_TIMEOUT`: the TCP (and TLS) connect of one hop. */
  readonly connectTimeout: Duration.Duration
  /** `EGRESS_TOTAL_TIMEOUT`: DNS, connect, headers and body of every hop of one call. */
  readonly totalTimeout: Duration.Duration
  /** `EGRESS_MAX_RESPONSE_BYTES`: largest response body, counted both on the wire and after decompression. */
  readonly maxResponseBytes: number
  /** `EGRESS_MAX_REDIRECTS`: redirects followed before the call fails with `too_many_redirects`. */
  readonly maxRedirects: number
  /**
   * `OTEL_PROPAGATE_UPSTREAM` (default `true`): every request carries the W3C `traceparent` of its `Egress.request`
   * span, so an upstream that traces (an LLM gateway, a tenant's own API) joins the task's trace.
   */
  readonly propagateTraceContext: boolean
}

/** Limits and the operator's allowlist of the egress guard. */
export class EgressConfig extends Context.Tag("@altan/tool/EgressConfig")<EgressConfig, EgressSettings>() {
  static readonly defaults: EgressSettings = {
    operatorAllowHosts: [],
    connectTimeout: Duration.seconds(10),
    totalTimeout: Duration.seconds(30),
    maxResponseBytes: 1024 * 1024,
    maxRedirects: 5,
    propagateTraceContext: true
  }

  static readonly layer = (options?: Partial<EgressSettings>): Layer.Layer<EgressConfig> =>
    Layer.succeed(EgressConfig, { ...EgressConfig.defaults, ...options })

  /**
   * `EGRESS_ALLOW_HOSTS` (comma-separated), `EGRESS_CONNECT_TIMEOUT`, `EGRESS_TOTAL_TIMEOUT` (e.g. `30 seconds`),
   * `EGRESS_MAX_RESPONSE_BYTES`, `EGRESS_MAX_REDIRECTS`.
   */
  static readonly config: Config.Config<EgressSettings> = Config.all({
    operatorAllowHosts: Config.string("EGRESS_ALLOW_HOSTS").pipe(
      Config.withDefault(""),
      Config.mapOrFail((raw) => {
        const entries = raw.split(",").map((s) => s.trim()).filter((s) => s !== "")
        const invalid = entries.find((entry) => parseHostRule(entry) === undefined)
        return invalid === undefined
          ? Either.right(entries)
          : Either.left(ConfigError.InvalidData([], `invalid EGRESS_ALLOW_HOSTS entry: ${invalid}`))
      }),
      Config.withDescription("host or host:port entries that may be reached even on private addresses.")
    ),
    connectTimeout: Config.duration("EGRESS_CONNECT_TIMEOUT").pipe(
      Config.withDefault(EgressConfig.defaults.connectTimeout)
    ),
    totalTimeout: Config.duration("EGRESS_TOTAL_TIMEOUT").pipe(Config.withDefault(EgressConfig.defaults.totalTimeout)),
    maxResponseBytes: Config.integer("EGRESS_MAX_RESPONSE_BYTES").pipe(
      Config.withDefault(EgressConfig.defaults.maxResponseBytes)
    ),
    maxRedirects: Config.integer("EGRESS_MAX_REDIRECTS").pipe(Config.withDefault(EgressConfig.defaults.maxRedirects)),
    propagateTraceContext: Config.boolean("OTEL_PROPAGATE_UPSTREAM").pipe(
      Config.withDefault(EgressConfig.defaults.propagateTraceContext),
      Config.withDescription("whether outbound requests carry the W3C traceparent of their span.")
    )
  })

  static readonly layerConfig: Layer.Layer<EgressConfig, ConfigError.ConfigError> = Layer.effect(
    EgressConfig,
    EgressConfig.config
  )
}
