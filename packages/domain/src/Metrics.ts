/**
 * Metric definitions shared by every service, so that an anomaly (a tenant's error rate, a provider's
 * rate-limit waits, an audit sink that drops records) can be seen and alerted on. Only definitions live
 * here: services update them. Nothing exports them yet (`OTEL_EXPORTER_OTLP_ENDPOINT` is not wired).
 *
 * Cardinality: `altan_audit_records_total` has no tenant tag (actions × outcomes, a few dozen series);
 * `altan_calls_total` and `altan_rate_limit_wait_seconds` carry `tenant` and `provider`, one series per
 * tenant, provider and outcome (times the buckets for the histogram), about as many as there are
 * `Connection` entities. Per-tenant breakdowns of audited actions belong to the audit log itself.
 */
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"

/**
 * The metric of `key` with `tags` (in order) built into the key, for metrics updated on every call.
 *
 * `Metric.tagged` merges its tags into a new array on every update, which misses Effect's hook cache, so each
 * update builds, formats and hashes a new metric key and looks it up in the registry (about 10 µs). A metric
 * made from the tagged key finds its hook once. Reading it with the same tags through `Metric.tagged` (outermost
 * tag last) gives the same series.
 */
export const withTags = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  tags: Readonly<Record<string, string>>
): Metric.Metric<Type, MetricKeyType.MetricKeyType.InType<Type>, MetricKeyType.MetricKeyType.OutType<Type>> =>
  Metric.fromMetricKey(
    MetricKey.taggedWithLabels(key, Object.entries(tags).map(([name, value]) => MetricLabel.make(name, value)))
  )

/** The key of `auditRecords`. */
export const auditRecordsKey = MetricKey.counter("altan_audit_records_total", {
  description: "Audit records, by action and outcome (all tenants).",
  incremental: true
})

/** `altan_audit_records_total{action,outcome}`: audit records written, of every tenant. */
export const auditRecords = Metric.fromMetricKey(auditRecordsKey)

/** The key of `auditSinkFailures`. */
export const auditSinkFailuresKey = MetricKey.counter("altan_audit_sink_failures_total", {
  description: "Audit records that could not be written, by sink; each leaves a gap in its hash chain.",
  incremental: true
})

/** `altan_audit_sink_failures_total{sink}`: audit records a sink could not write (a gap in their chain). */
export const auditSinkFailures = Metric.fromMetricKey(auditSinkFailuresKey)

/**
 * How a call to an upstream ended: `ok`; `failed` (network, timeout, 5xx, a refused request);
 * `rate_limited` (the provider answered 429, or the tenant's budget refused the call).
 */
export type CallOutcome = "ok" | "failed" | "rate_limited"

/** The key of `calls`. */
export const callsKey = MetricKey.counter("altan_calls_total", {
  description: "Calls to third-party APIs and LLMs, by tenant, provider and outcome.",
  incremental: true
})

/** `altan_calls_total{tenant,provider,outcome}`: calls to third parties and LLMs. */
export const calls = Metric.fromMetricKey(callsKey)

/** The key of `rateLimitWaitSeconds`. */
export const rateLimitWaitSecondsKey = MetricKey.histogram(
  "altan_rate_limit_wait_seconds",
  MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 14 }),
  "Time calls waited for their tenant's rate budget with a provider, in seconds."
)

/** `altan_rate_limit_wait_seconds{tenant,provider}`: time a call waited for the tenant's rate budget. */
export const rateLimitWaitSeconds = Metric.fromMetricKey(rateLimitWaitSecondsKey)

/**
 * The call metrics of one tenant and provider (e.g. `callMetrics("acme", "slack")` in a `Connection`):
 * `call(outcome)` counts one call, `rateLimitWait(duration)` records a wait for budget.
 */
export const callMetrics = (tenant: string, provider: string) => {
  const byOutcome = {
    ok: withTags(callsKey, { tenant, provider, outcome: "ok" }),
    failed: withTags(callsKey, { tenant, provider, outcome: "failed" }),
    rate_limited: withTags(callsKey, { tenant, provider, outcome: "rate_limited" })
  } satisfies Record<CallOutcome, typeof calls>
  const wait = withTags(rateLimitWaitSecondsKey, { tenant, provider })
  const call = (outcome: CallOutcome): Effect.Effect<void> => Metric.increment(byOutcome[outcome])
  return {
    call,
    rateLimitWait: (duration: Duration.DurationInput): Effect.Effect<void> =>
      Metric.update(wait, Duration.toSeconds(Duration.decode(duration)))
  }
}
