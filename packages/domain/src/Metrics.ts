/**
 * Metric definitions shared by every service, so that an anomaly (a tenant's error rate, a provider's
 * rate-limit waits, an audit sink that drops records, tasks failing) can be seen and alerted on. Only definitions
 * live here: services update them. Every runner serves them as Prometheus text on its operator port
 * (`METRICS_PORT`, `GET /metrics`) and exports them over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
 * (`packages/observability/src/Telemetry.ts`). The alert rules and the autoscaler in `k8s/` use these names.
 *
 * Cardinality: `altan_audit_records_total` has no tenant tag (actions × outcomes, a few dozen series); the task
 * metrics none either (statuses × buckets); `altan_calls_total`, `altan_rate_limit_wait_seconds` and
 * `altan_breaker_open` carry `tenant` and `provider`, one series per tenant, provider and outcome (times the
 * buckets for the histogram), about as many as there are `Connection` entities; `altan_llm_tokens_total` one per
 * tenant, model and token type. Per-tenant breakdowns of audited actions belong to the audit log itself.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
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

/** Call metrics by tenant and provider: a session builds them on every activation (a fresh session per task). */
const callMetricsMade = new Map<string, ReturnType<typeof makeCallMetrics>>()
const maxCallMetricsMade = 10_000

/**
 * The call metrics of one tenant and provider (e.g. `callMetrics("acme", "slack")` in a `Connection`):
 * `call(outcome)` counts one call, `rateLimitWait(duration)` records a wait for budget.
 */
export const callMetrics = (tenant: string, provider: string) => {
  const key = `${tenant}\u0000${provider}`
  let made = callMetricsMade.get(key)
  if (made === undefined) {
    if (callMetricsMade.size >= maxCallMetricsMade) callMetricsMade.clear()
    made = makeCallMetrics(tenant, provider)
    callMetricsMade.set(key, made)
  }
  return made
}

const makeCallMetrics = (tenant: string, provider: string) => {
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

/** The key of `tasksAccepted`. */
export const tasksAcceptedKey = MetricKey.counter("altan_tasks_accepted_total", {
  description: "Tasks accepted (recorded by their session), all tenants.",
  incremental: true
})

/** `altan_tasks_accepted_total`: tasks accepted. */
export const tasksAccepted = Metric.fromMetricKey(tasksAcceptedKey)

/** The key of `tasksFinished`. */
export const tasksFinishedKey = MetricKey.counter("altan_tasks_finished_total", {
  description: "Tasks that reached a terminal status, by status (succeeded, failed, cancelled).",
  incremental: true
})

/** `altan_tasks_finished_total{status}`: tasks that reached a terminal status. */
export const tasksFinished = Metric.fromMetricKey(tasksFinishedKey)

/** The key of `taskDurationSeconds`. */
export const taskDurationSecondsKey = MetricKey.histogram(
  "altan_task_duration_seconds",
  MetricBoundaries.exponential({ start: 0.01, factor: 2, count: 18 }),
  "Time from a task's acceptance to its terminal status, in seconds, by status."
)

/** `altan_task_duration_seconds{status}`: from acceptance to the terminal status. */
export const taskDurationSeconds = Metric.fromMetricKey(taskDurationSecondsKey)

/** The key of `tasksInFlight`. */
export const tasksInFlightKey = MetricKey.gauge("altan_tasks_in_flight", {
  description: "Tasks this process holds that have not finished (queued or running): the agent's autoscaling metric."
})

/** `altan_tasks_in_flight`: tasks held by this process's sessions and not finished yet. */
export const tasksInFlight = Metric.fromMetricKey(tasksInFlightKey)

/** The terminal statuses of a task, the `status` tag of the task metrics. */
export type TaskEnd = "succeeded" | "failed" | "cancelled"

const finishedBy = {
  succeeded: withTags(tasksFinishedKey, { status: "succeeded" }),
  failed: withTags(tasksFinishedKey, { status: "failed" }),
  cancelled: withTags(tasksFinishedKey, { status: "cancelled" })
} satisfies Record<TaskEnd, typeof tasksFinished>

const durationBy = {
  succeeded: withTags(taskDurationSecondsKey, { status: "succeeded" }),
  failed: withTags(taskDurationSecondsKey, { status: "failed" }),
  cancelled: withTags(taskDurationSecondsKey, { status: "cancelled" })
} satisfies Record<TaskEnd, typeof taskDurationSeconds>

/**
 * The task metrics, updated where a session records a task: `accepted` when it is created, `finished` at its
 * terminal status with the time since it was accepted, and `inFlight(+1 | -1)` as this process starts or stops
 * holding an unfinished task (synchronous: it is bookkeeping of the session's own memory, done where that changes).
 */
export const taskMetrics = {
  /** Every series at 0, so a runner that has not seen a task yet still reports them (the autoscaler reads one). */
  initialize: Effect.all([
    Metric.incrementBy(tasksAccepted, 0),
    Metric.incrementBy(tasksInFlight, 0),
    ...Object.values(finishedBy).map((counter) => Metric.incrementBy(counter, 0))
  ], { discard: true }),
  accepted: Metric.increment(tasksAccepted) as Effect.Effect<void>,
  finished: (status: string, durationMs: number): Effect.Effect<void> =>
    status in finishedBy
      ? Effect.zipRight(
        Metric.increment(finishedBy[status as TaskEnd]),
        Metric.update(durationBy[status as TaskEnd], Math.max(0, durationMs) / 1000)
      )
      : Effect.void,
  inFlight: (delta: number): void => tasksInFlight.unsafeModify(delta, [])
}

/** The key of `breakerOpen`. */
export const breakerOpenKey = MetricKey.gauge("altan_breaker_open", {
  description: "1 while the circuit breaker of a tenant's connection to a provider is open (or probing), else 0."
})

/** `altan_breaker_open{tenant,provider}`: 1 while the connection's breaker is open. */
export const breakerOpen = Metric.fromMetricKey(breakerOpenKey)

/** The breaker gauge of one tenant and provider: `open(true)` as the circuit opens, `open(false)` as it closes. */
export const breakerMetric = (tenant: string, provider: string) => {
  const gauge = withTags(breakerOpenKey, { tenant, provider })
  return (open: boolean): Effect.Effect<void> => Metric.set(gauge, open ? 1 : 0)
}

/** The key of `llmTokens`. */
export const llmTokensKey = MetricKey.counter("altan_llm_tokens_total", {
  description: "LLM tokens used, by tenant, model and type (input, output).",
  incremental: true
})

/** `altan_llm_tokens_total{tenant,model,type}`: tokens the tenants' LLMs reported. */
export const llmTokens = Metric.fromMetricKey(llmTokensKey)

/** Counts the tokens of one LLM answer. */
export const countLlmTokens = (
  tenant: string,
  model: string,
  usage: { readonly input: number; readonly output: number }
): Effect.Effect<void> =>
  Effect.zipRight(
    usage.input > 0
      ? Metric.incrementBy(withTags(llmTokensKey, { tenant, model, type: "input" }), usage.input)
      : Effect.void,
    usage.output > 0
      ? Metric.incrementBy(withTags(llmTokensKey, { tenant, model, type: "output" }), usage.output)
      : Effect.void
  )
