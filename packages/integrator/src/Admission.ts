import { TooManyRequests, type Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import type { AdmissionSettings } from "@altan/domain/Settings"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** The `Retry-After` header of a `TooManyRequests` (or an `Unavailable`): whole seconds, at least 1. */
export const retryAfterSeconds = (error: TooManyRequests | Unavailable): number =>
  Math.max(1, Math.ceil(Number(error.details?.["retry_after_ms"] ?? 1000) / 1000))

/**
 * Admission control at the edge, per integrator process: each tenant's request rate (a token bucket) and its
 * concurrent tasks, from `settings.admission` over the process defaults. Tenants are independent; the state
 * of a tenant that is idle (full bucket, no task) is dropped, and at most `maxTenants` are held.
 */
export class Admission extends Context.Tag("@altan/integrator/Admission")<Admission, {
  /** Takes one request of the tenant's rate, or fails with the time until one is free. */
  readonly admit: (tenantId: TenantId, settings?: AdmissionSettings | undefined) => Effect.Effect<void, TooManyRequests>
  /**
   * Runs `effect` in one of the tenant's task slots, released when it ends however it ends (success, failure,
   * interruption); fails at once, without running it, when all slots are taken.
   */
  readonly task: <A, E, R>(
    tenantId: TenantId,
    settings: AdmissionSettings | undefined,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TooManyRequests, R>
  /** The tenant's state at this edge (a fresh tenant's when none is held), for inspection and metrics. */
  readonly snapshot: (tenantId: TenantId, settings?: AdmissionSettings | undefined) => Effect.Effect<{
    readonly tokens: number
    readonly burst: number
    readonly requests_per_second: number
    readonly tasks: number
    readonly max_concurrent_tasks: number
  }>
}>() {}

export interface Options {
  /** Requests per second of a tenant whose settings set none. Default 50. */
  readonly requestsPerSecond: number
  /** The burst, in seconds of rate: a tenant's bucket holds `ceil(rate * burstSeconds)`. Default 2 (100). */
  readonly burstSeconds: number
  /** Concurrent tasks of a tenant whose settings set none. Default 32. */
  readonly maxConcurrentTasks: number
  /** The `Retry-After` when all task slots are taken (nobody knows when one frees). Default 1 second. */
  readonly busyRetryAfter: Duration.DurationInput
  /** Tenants held at most; past that, the least recently seen without a running task are forgotten. */
  readonly maxTenants: number
}

export const defaults: Options = {
  requestsPerSecond: 50,
  burstSeconds: 2,
  maxConcurrentTasks: 32,
  busyRetryAfter: Duration.seconds(1),
  maxTenants: 10_000
}

interface TenantState {
  rate: number
  burst: number
  tokens: number
  at: number
  tasks: number
}

/** How often idle tenants are swept out. */
const SWEEP_EVERY = 60_000

export const make = (options?: Partial<Options>): Effect.Effect<Admission["Type"]> =>
  Effect.sync(() => {
    const o = { ...defaults, ...options }
    const busyRetryAfterMs = Duration.toMillis(o.busyRetryAfter)
    const tenants = new Map<TenantId, TenantState>()
    let sweptAt = 0

    // a tenant's admin writes its settings: they may lower the operator's limits, never raise them
    const limitsOf = (settings: AdmissionSettings | undefined) => {
      const rate = Math.min(settings?.requests_per_second ?? o.requestsPerSecond, o.requestsPerSecond)
      return {
        rate,
        burst: Math.max(1, Math.ceil(rate * o.burstSeconds)),
        maxTasks: Math.min(settings?.max_concurrent_tasks ?? o.maxConcurrentTasks, o.maxConcurrentTasks)
      }
    }

    const refill = (state: TenantState, now: number) => {
      if (now > state.at) {
        state.tokens = Math.min(state.burst, state.tokens + (now - state.at) * state.rate / 1000)
        state.at = now
      }
    }

    const idle = (state: TenantState, now: number) => {
      refill(state, now)
      return state.tasks === 0 && state.tokens >= state.burst
    }

    const sweep = (now: number) => {
      sweptAt = now
      for (const [tenantId, state] of tenants) if (idle(state, now)) tenants.delete(tenantId)
      // still too many: forget the least recently seen (Map order) that run no task
      for (const [tenantId, state] of tenants) {
        if (tenants.size <= o.maxTenants) break
        if (state.tasks === 0) tenants.delete(tenantId)
      }
    }

    /** The tenant's state, up to date with `settings`, and marked as the most recently seen. */
    const stateOf = (tenantId: TenantId, settings: AdmissionSettings | undefined, now: number): TenantState => {
      if (now - sweptAt >= SWEEP_EVERY || tenants.size > o.maxTenants) sweep(now)
      const { burst, rate } = limitsOf(settings)
      let state = tenants.get(tenantId)
      if (state === undefined) state = { rate, burst, tokens: burst, at: now, tasks: 0 }
      else {
        tenants.delete(tenantId)
        refill(state, now)
        if (state.rate !== rate || state.burst !== burst) {
          state.rate = rate
          state.burst = burst
          state.tokens = Math.min(state.tokens, burst)
        }
      }
      tenants.set(tenantId, state)
      return state
    }

    const admit = (tenantId: TenantId, settings?: AdmissionSettings) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const state = stateOf(tenantId, settings, now)
        if (state.tokens >= 1 - 1e-9) {
          state.tokens -= 1
          return Effect.void
        }
        const retryAfterMs = Math.max(1, Math.ceil((1 - state.tokens) * 1000 / state.rate))
        return Effect.fail(
          new TooManyRequests({
            code: "rate_limited",
            message: `too many requests: at most ${state.rate} per second (bursts of ${state.burst}) for this tenant`,
            details: { retry_after_ms: retryAfterMs, limit: "requests_per_second" }
          })
        )
      })

    const task = <A, E, R>(
      tenantId: TenantId,
      settings: AdmissionSettings | undefined,
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | TooManyRequests, R> =>
      Effect.acquireUseRelease(
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const state = stateOf(tenantId, settings, now)
          const { maxTasks } = limitsOf(settings)
          if (state.tasks >= maxTasks) {
            return Effect.fail(
              new TooManyRequests({
                code: "rate_limited",
                message: `too many tasks: at most ${maxTasks} at a time for this tenant`,
                details: { retry_after_ms: busyRetryAfterMs, limit: "max_concurrent_tasks" }
              })
            )
          }
          state.tasks += 1
          return Effect.succeed(state)
        }),
        () => effect,
        // the slot goes back to the state it was taken from, even if that tenant was swept meanwhile
        (state) => Effect.sync(() => void (state.tasks -= 1))
      )

    const snapshot = (tenantId: TenantId, settings?: AdmissionSettings) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const { burst, maxTasks, rate } = limitsOf(settings)
        const state = tenants.get(tenantId)
        if (state !== undefined) refill(state, now)
        return {
          tokens: Math.floor((state?.tokens ?? burst) * 1000) / 1000,
          burst: state?.burst ?? burst,
          requests_per_second: state?.rate ?? rate,
          tasks: state?.tasks ?? 0,
          max_concurrent_tasks: maxTasks
        }
      })

    return Admission.of({
      admit: Effect.fn("Admission.admit", { captureStackTrace: false })(function*(tenantId, settings) {
        yield* Effect.annotateCurrentSpan("altan.tenant_id", tenantId)
        return yield* admit(tenantId, settings)
      }),
      task,
      snapshot
    })
  })

export const layer = (options?: Partial<Options>): Layer.Layer<Admission> => Layer.effect(Admission, make(options))

/** `ADMISSION_*` environment variables over `defaults`. */
export const config: Config.Config<Options> = Config.all({
  requestsPerSecond: Config.number("ADMISSION_REQUESTS_PER_SECOND").pipe(
    Config.withDefault(defaults.requestsPerSecond),
    Config.withDescription("Requests per second a tenant may make at each integrator runner, unless its settings say")
  ),
  burstSeconds: Config.number("ADMISSION_BURST_SECONDS").pipe(
    Config.withDefault(defaults.burstSeconds),
    Config.withDescription("A tenant's burst, in seconds of its request rate")
  ),
  maxConcurrentTasks: Config.integer("ADMISSION_MAX_CONCURRENT_TASKS").pipe(
    Config.withDefault(defaults.maxConcurrentTasks),
    Config.withDescription("Tasks a tenant may run at once through each integrator runner, unless its settings say")
  ),
  busyRetryAfter: Config.duration("ADMISSION_BUSY_RETRY_AFTER").pipe(
    Config.withDefault(Duration.decode(defaults.busyRetryAfter)),
    Config.withDescription("Retry-After when a tenant's task slots are all taken")
  ),
  maxTenants: Config.integer("ADMISSION_MAX_TENANTS").pipe(
    Config.withDefault(defaults.maxTenants),
    Config.withDescription("Tenants whose admission state a runner holds at most")
  )
})

export const layerConfig: Layer.Layer<Admission, ConfigError.ConfigError> = Layer.effect(
  Admission,
  Effect.flatMap(config, make)
)
