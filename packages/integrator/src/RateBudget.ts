import { callMetrics } from "@altan/domain/Metrics"
import type { RateLimit } from "@altan/domain/Settings"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"
import * as DailyAllowance from "./DailyAllowance.js"
import { type ObservedResponse, readSignals } from "./RateSignals.js"
import * as SlidingWindow from "./SlidingWindow.js"
import type { Limits } from "./VendorLimits.js"

export type { ObservedResponse } from "./RateSignals.js"
export { effectiveLimits, keyOf, type Limits } from "./VendorLimits.js"

/**
 * The call budget of one tenant at one provider, owned by its `Connection[tenant/provider]` actor. The actor is
 * a cluster singleton, so this in-memory budget holds across all runners without a distributed lock.
 *
 * - A sliding window (`rate_limit`): at most `requests` calls start in any `per_seconds` interval, whenever it
 *   begins (so 100 concurrent calls through 10/s start 10 at 0 s, 10 at 1 s, ..., 10 at 9 s; a token bucket would
 *   let up to twice the budget into the first second). Vendor limits such as HubSpot's "100 per 10 s" are such
 *   windows. Optionally one more window per `key` (`perKey`, e.g. one per Slack channel). A call counts in each.
 *   Each window is a log of the start times of its last `requests` calls (see `SlidingWindow`).
 * - A daily allowance (`daily_limit`) over a rolling 24 hours, counted in 5-minute slots: a call is forgotten
 *   between 24 h and 24 h 5 min after it was made. Rolling is the safe reading of both vendor models: it never
 *   exceeds a fixed per-day quota (HubSpot resets at the account's midnight) and matches Salesforce's rolling
 *   24-hour allowance. The last `dailyReserve` (10%) of it is kept for `sync` calls.
 * - What the provider says in its answers (`observe`): `Retry-After`, `X-RateLimit-*` and vendor equivalents
 *   pause the budget or count down the provider's window; `Sforce-Limit-Info` and HubSpot's daily headers set
 *   the daily allowance and its usage. After a pause the budget does not resume with a full window: one call
 *   starts when it ends, then one every `per_seconds / requests` until the calls stop coming faster than that.
 *
 * Waiting calls queue: all `sync` calls before any `async` one, first come first served within a priority.
 * A call whose own key window is full does not hold up calls for other keys.
 */
export interface RateBudget {
  /**
   * Waits until the call may start and takes its share of the budget. Fails with `OverBudget` at once when it
   * could not start by `deadline`, or when it is `sync` and the daily allowance is spent. Without a deadline
   * the call waits (an `async` call also waits for the daily allowance). Interrupting a waiting call removes it
   * from the queue without spending anything.
   */
  readonly acquire: (request: AcquireRequest) => Effect.Effect<void, OverBudget>
  /** Learns from a provider's answer (any status): pauses, the provider's own window, the daily usage. */
  readonly observe: (response: ObservedResponse) => Effect.Effect<void>
  /** Applies new limits (e.g. changed tenant settings); a no-op when they are unchanged. */
  readonly reconfigure: (limits: Limits) => Effect.Effect<void>
  /** The budget right now, for inspection and metrics. */
  readonly snapshot: () => Effect.Effect<Snapshot>
}

/**
 * A call the budget cannot start in time; `retry_after_ms` is when it could (an estimate). Local to the actor:
 * `Connection` answers it as its `RateLimited`.
 */
export class OverBudget extends Data.TaggedError("OverBudget")<{
  readonly retry_after_ms: number
  readonly message: string
}> {}

export type Priority = "sync" | "async"

export interface AcquireRequest {
  /** `sync`: someone waits for the answer, served first; `async`: background work, may wait for long. */
  readonly priority: Priority
  /** Epoch milliseconds by which the call must have started; a call that cannot fails fast. */
  readonly deadline?: number | undefined
  /** The sub-window of the call under `perKey`, e.g. `channel:C123` (see `keyOf`); ignored without `perKey`. */
  readonly key?: string | undefined
}

export interface Options extends Limits {
  /** The tenant, as the `tenant` tag of `altan_rate_limit_wait_seconds`. */
  readonly tenant: string
  /** The provider, as the `provider` tag of `altan_rate_limit_wait_seconds` and in messages. */
  readonly provider: string
  /** The share of the daily allowance only `sync` calls may spend, in [0, 1). Default 0.1. */
  readonly dailyReserve?: number | undefined
  /** The pause after a 429 that says nothing about when to retry. Default 1 second. */
  readonly defaultPause?: Duration.DurationInput | undefined
  /** The longest pause a response can impose (a later reset is probed after it). Default 1 hour. */
  readonly maxPause?: Duration.DurationInput | undefined
  /**
   * Per-key windows kept before idle ones (no call waiting, no start left in the window) are dropped.
   * Default 10,000.
   */
  readonly maxKeys?: number | undefined
  /**
   * Added to every window: a start counts against the limit for `per_seconds` plus this. Our grant and the
   * provider's count differ by network and scheduling delays; a margin keeps the provider's view in budget too.
   * Default 0.
   */
  readonly windowMargin?: Duration.DurationInput | undefined
}

export const defaults = {
  dailyReserve: 0.1,
  defaultPause: Duration.seconds(1),
  maxPause: Duration.hours(1),
  maxKeys: 10_000
} as const

export interface Snapshot {
  readonly provider: string
  readonly rate_limit: RateLimit | null
  /**
   * The calls `rate_limit` still lets start now: `requests` minus the starts in the last `per_seconds`. After a
   * pause it counts the paced starts (see `observe`) as taken, so it stays low until they are out of the window.
   * Pauses, the provider's window and the daily allowance are not taken into account (see `paused_until`,
   * `provider_window`, `daily`). Null without `rate_limit`.
   */
  readonly available: number | null
  /** Epoch milliseconds until which nothing starts, after a 429 or an exhausted provider window. */
  readonly paused_until: number | null
  /** The provider's own window from `X-RateLimit-Remaining`/`-Reset` (or equivalents), while it runs. */
  readonly provider_window: { readonly remaining: number; readonly reset_at: number } | null
  readonly daily: {
    /** Calls counted in the last 24 hours (ours, or what the provider reported). */
    readonly used: number
    readonly limit: number | null
    /** Calls of the allowance only `sync` calls may spend. */
    readonly reserve: number
  }
  readonly queued: { readonly sync: number; readonly async: number }
  /** Per-key windows held. */
  readonly keys: number
}

const sameLimit = (a: RateLimit | undefined, b: RateLimit | undefined) =>
  a === b || (a !== undefined && b !== undefined && a.requests === b.requests && a.per_seconds === b.per_seconds)

interface Waiter {
  readonly priority: Priority
  /** Only set when the budget has per-key limits. */
  readonly key: string | undefined
  readonly deadline: number | undefined
  readonly enqueuedAt: number
  readonly deferred: Deferred.Deferred<void, OverBudget>
  state: "queued" | "granted" | "gone"
  taken?: {
    readonly at: number
    readonly window: SlidingWindow.SlidingWindow | undefined
    readonly keyWindow: SlidingWindow.SlidingWindow | undefined
    readonly slot: DailyAllowance.Slot
  }
}

const priorities: ReadonlyArray<Priority> = ["sync", "async"]

/**
 * A budget with the given limits. Its scope (the `Connection` actor's) runs the fiber that wakes waiting calls
 * when their window has room again; closing it interrupts the calls still waiting.
 */
export const make = (options: Options): Effect.Effect<RateBudget, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { provider } = options
    const reserveShare = Math.min(Math.max(options.dailyReserve ?? defaults.dailyReserve, 0), 0.99)
    const defaultPauseMs = Duration.toMillis(options.defaultPause ?? defaults.defaultPause)
    const maxPauseMs = Duration.toMillis(options.maxPause ?? defaults.maxPause)
    const margin = options.windowMargin === undefined ? 0 : Duration.toMillis(options.windowMargin)
    const maxKeys = options.maxKeys ?? defaults.maxKeys
    const metrics = callMetrics(options.tenant, provider)

    const start = yield* Clock.currentTimeMillis
    let limits: Limits = {}
    let window: SlidingWindow.SlidingWindow | undefined
    const keys = new Map<string, SlidingWindow.SlidingWindow>()
    /** Waiting calls per key, by priority. */
    const waitingByKey = new Map<string, { sync: number; async: number }>()
    let pausedUntil = 0
    let providerWindow: { remaining: number; resetAt: number } | undefined
    const daily = DailyAllowance.make(reserveShare)
    const queues: Record<Priority, Set<Waiter>> = { sync: new Set(), async: new Set() }
    let wake = Deferred.unsafeMake<void>(FiberId.none)
    const signal = () => Deferred.unsafeDone(wake, Exit.void)

    const configure = (next: Limits, now: number) => {
      // the logs keep their recent starts under new limits (see `SlidingWindow.reshape`)
      if (!sameLimit(next.rate_limit, limits.rate_limit)) {
        if (next.rate_limit === undefined) window = undefined
        else if (window === undefined) window = SlidingWindow.make(next.rate_limit, margin)
        else SlidingWindow.reshape(window, next.rate_limit, now, margin)
      }
      if (!sameLimit(next.perKey, limits.perKey)) {
        if (next.perKey === undefined) keys.clear()
        else for (const kw of keys.values()) SlidingWindow.reshape(kw, next.perKey, now, margin)
      }
      daily.configured = next.daily_limit
      limits = next
    }
    configure({ rate_limit: options.rate_limit, daily_limit: options.daily_limit, perKey: options.perKey }, start)

    const keyOfWaiter = (key: string | undefined) => limits.perKey === undefined ? undefined : key

    const keyWindow = (key: string | undefined, now: number): SlidingWindow.SlidingWindow | undefined => {
      if (key === undefined || limits.perKey === undefined) return undefined
      let found = keys.get(key)
      if (found === undefined) {
        if (keys.size >= maxKeys) {
          // a log whose starts are all out of the window, for a key nobody waits for, is the same as none
          for (const [k, kw] of keys) {
            if (SlidingWindow.startsIn(kw, now) === 0 && !waitingByKey.has(k)) keys.delete(k)
          }
        }
        keys.set(key, found = SlidingWindow.make(limits.perKey, margin))
      }
      return found
    }

    const countWaiting = (w: Waiter, delta: 1 | -1) => {
      if (w.key === undefined) return
      const counts = waitingByKey.get(w.key) ?? { sync: 0, async: 0 }
      counts[w.priority] += delta
      if (counts.sync + counts.async === 0) waitingByKey.delete(w.key)
      else waitingByKey.set(w.key, counts)
    }

    const pause = (until: number, now: number) => {
      if (until <= pausedUntil || until <= now) return
      pausedUntil = until
      // resume with one call at the end of the pause, then at the budget's average rate (not a full window)
      if (window !== undefined) SlidingWindow.pace(window, until)
    }

    /** When a call arriving now would start, if it waited in line. */
    const estimate = (priority: Priority, key: string | undefined, now: number): number => {
      let at = Math.max(now, pausedUntil)
      const ahead = priority === "sync" ? queues.sync.size : queues.sync.size + queues.async.size
      if (window !== undefined) at = Math.max(at, SlidingWindow.timeFor(window, at, ahead + 1))
      if (providerWindow !== undefined && providerWindow.remaining <= ahead) at = Math.max(at, providerWindow.resetAt)
      const kw = keyWindow(key, now)
      if (kw !== undefined) {
        const counts = waitingByKey.get(key!)
        const aheadOnKey = counts === undefined ? 0 : priority === "sync" ? counts.sync : counts.sync + counts.async
        at = Math.max(at, SlidingWindow.timeFor(kw, now, aheadOnKey + 1))
      }
      return Math.max(at, daily.readyAt(priority, now))
    }

    const overBudget = (message: string, at: number, now: number) =>
      new OverBudget({
        message: `${provider}: ${message}`,
        retry_after_ms: Number.isFinite(at) ? Math.max(1, Math.ceil(at - now)) : DailyAllowance.DAY
      })

    const dequeue = (w: Waiter) => {
      queues[w.priority].delete(w)
      countWaiting(w, -1)
    }

    const reject = (w: Waiter, error: OverBudget) => {
      dequeue(w)
      w.state = "gone"
      Deferred.unsafeDone(w.deferred, Exit.fail(error))
    }

    const grant = (w: Waiter, now: number) => {
      dequeue(w)
      const kw = keyWindow(w.key, now)
      if (window !== undefined) SlidingWindow.record(window, now)
      if (kw !== undefined) SlidingWindow.record(kw, now)
      const slot = daily.spend(now)
      if (providerWindow !== undefined && --providerWindow.remaining <= 0) {
        pause(providerWindow.resetAt, now)
        providerWindow = undefined
      }
      w.state = "granted"
      w.taken = { at: now, window, keyWindow: kw, slot }
      Deferred.unsafeDone(w.deferred, Exit.void)
    }

    /** Gives back what an interrupted call took before it could use it. */
    const refund = (w: Waiter) => {
      const taken = w.taken
      if (taken === undefined) return
      // its start leaves the logs, as if it had never been made
      if (taken.window !== undefined) SlidingWindow.forget(taken.window, taken.at)
      if (taken.keyWindow !== undefined) SlidingWindow.forget(taken.keyWindow, taken.at)
      daily.refund(taken.slot)
    }

    const next = (now: number): Waiter | undefined => {
      if (now < pausedUntil || (window !== undefined && !SlidingWindow.hasRoom(window, now))) return undefined
      for (const priority of priorities) {
        if (queues[priority].size === 0 || !daily.canSpend(priority)) continue
        const blocked = new Set<string>()
        for (const w of queues[priority]) {
          if (w.key !== undefined && blocked.has(w.key)) continue
          const kw = keyWindow(w.key, now)
          if (kw === undefined || SlidingWindow.hasRoom(kw, now)) return w
          blocked.add(w.key!)
        }
      }
      return undefined
    }

    /** Starts every call that may start now; fails `sync` calls once the daily allowance is spent. */
    const pump = (now: number) => {
      daily.expire(now)
      if (providerWindow !== undefined && now >= providerWindow.resetAt) providerWindow = undefined
      for (let w = next(now); w !== undefined; w = next(now)) grant(w, now)
      if (queues.sync.size > 0 && !daily.canSpend("sync")) {
        const error = overBudget("the daily API allowance is spent", daily.readyAt("sync", now), now)
        for (const w of queues.sync) reject(w, error)
      }
    }

    /** When something may start next, if anything waits. */
    const wakeAt = (now: number): number | undefined => {
      if (queues.sync.size + queues.async.size === 0) return undefined
      if (now < pausedUntil) return pausedUntil
      const globalAt = window === undefined ? now : SlidingWindow.timeFor(window, now, 1)
      let at = Infinity
      for (const priority of priorities) {
        if (queues[priority].size === 0) continue
        let keyAt = Infinity
        const seen = new Set<string>()
        for (const w of queues[priority]) {
          if (w.key !== undefined && seen.has(w.key)) continue
          const kw = keyWindow(w.key, now)
          if (kw === undefined) {
            keyAt = now
            break
          }
          seen.add(w.key!)
          keyAt = Math.min(keyAt, SlidingWindow.timeFor(kw, now, 1))
        }
        at = Math.min(at, Math.max(globalAt, keyAt, daily.readyAt(priority, now)))
      }
      return Number.isFinite(at) ? Math.max(now + 1, Math.ceil(at - 1e-6)) : undefined
    }

    const cancel = (w: Waiter) => {
      if (w.state === "queued") {
        dequeue(w)
        signal()
      } else if (w.state === "granted") {
        refund(w)
        signal()
      }
      w.state = "gone"
    }

    // the only fiber that sleeps: it wakes when a window has room again, or when anything changes (`signal`)
    yield* Effect.forkScoped(Effect.gen(function*() {
      for (;;) {
        const now = yield* Clock.currentTimeMillis
        const woken = wake = Deferred.unsafeMake<void>(FiberId.none)
        pump(now)
        const at = wakeAt(now)
        yield* at === undefined
          ? Deferred.await(woken)
          : Effect.raceFirst(Deferred.await(woken), Effect.sleep(Duration.millis(at - now)))
      }
    }))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const priority of priorities) {
          for (const w of queues[priority]) {
            dequeue(w)
            w.state = "gone"
            Deferred.unsafeDone(w.deferred, Exit.interrupt(FiberId.none))
          }
        }
      })
    )

    const enqueue = (request: AcquireRequest, now: number): Waiter | OverBudget => {
      pump(now)
      const key = keyOfWaiter(request.key)
      if (request.priority === "sync" && !daily.canSpend("sync")) {
        return overBudget("the daily API allowance is spent", daily.readyAt("sync", now), now)
      }
      if (request.deadline !== undefined) {
        const at = estimate(request.priority, key, now)
        if (at > request.deadline) return overBudget("no call can start before the deadline", at, now)
      }
      const w: Waiter = {
        priority: request.priority,
        key,
        deadline: request.deadline,
        enqueuedAt: now,
        deferred: Deferred.unsafeMake<void, OverBudget>(FiberId.none),
        state: "queued"
      }
      queues[w.priority].add(w)
      countWaiting(w, 1)
      pump(now)
      if (w.state === "queued") signal()
      return w
    }

    /** At its deadline, a call still waiting gives up. */
    const expire = (w: Waiter, now: number) => {
      pump(now)
      if (w.state !== "queued") return
      dequeue(w)
      w.state = "gone"
      Deferred.unsafeDone(
        w.deferred,
        Exit.fail(overBudget("no call could start before the deadline", estimate(w.priority, w.key, now), now))
      )
      signal()
    }

    const acquire = Effect.fn("RateBudget.acquire", {
      attributes: { "altan.tenant_id": options.tenant, "altan.provider": provider },
      captureStackTrace: false
    })(
      (request: AcquireRequest): Effect.Effect<void, OverBudget> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const w = enqueue(request, now)
            if (w instanceof OverBudget) return Effect.fail(w)
            const deadline = w.deadline
            const started = deadline === undefined || w.state !== "queued"
              ? Deferred.await(w.deferred)
              : Effect.raceFirst(
                Deferred.await(w.deferred),
                Effect.sleep(Duration.millis(Math.max(0, deadline - now))).pipe(
                  Effect.zipRight(Clock.currentTimeMillis),
                  Effect.flatMap((at) => Effect.sync(() => expire(w, at))),
                  Effect.zipRight(Effect.never)
                )
              )
            return restore(started).pipe(
              Effect.onInterrupt(() => Effect.sync(() => cancel(w))),
              // every call that started, 0 when it did not wait: `altan_rate_limit_wait_seconds{tenant,provider}`
              Effect.zipRight(Effect.suspend(() => metrics.rateLimitWait(Duration.millis(w.taken!.at - w.enqueuedAt))))
            )
          })
        ),
      // the call's priority, on its span
      (effect, request) => Effect.zipRight(Effect.annotateCurrentSpan("altan.priority", request.priority), effect)
    )

    const observe = (response: ObservedResponse): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          const signals = readSignals(response, now, defaultPauseMs)
          if (signals.pauseUntil !== undefined) pause(Math.min(signals.pauseUntil, now + maxPauseMs), now)
          if (signals.window !== undefined) {
            providerWindow = { ...signals.window, resetAt: Math.min(signals.window.resetAt, now + maxPauseMs) }
          }
          if (signals.daily !== undefined) daily.report(signals.daily.used, signals.daily.limit, now)
          // calls that cannot start before their deadline any more say so now
          if (now < pausedUntil) {
            for (const priority of priorities) {
              for (const w of queues[priority]) {
                if (w.deadline !== undefined && w.deadline < pausedUntil) {
                  reject(w, overBudget(`paused by the provider (HTTP ${response.status})`, pausedUntil, now))
                }
              }
            }
          }
          pump(now)
          signal()
        }))

    const reconfigure = (next: Limits): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          if (
            sameLimit(next.rate_limit, limits.rate_limit) && sameLimit(next.perKey, limits.perKey) &&
            next.daily_limit === limits.daily_limit
          ) return
          configure(next, now)
          pump(now)
          signal()
        }))

    const snapshot = (): Effect.Effect<Snapshot> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        pump(now)
        const limit = daily.limit()
        return {
          provider,
          rate_limit: limits.rate_limit ?? null,
          available: window === undefined ? null : Math.max(0, window.requests - SlidingWindow.startsIn(window, now)),
          paused_until: pausedUntil > now ? pausedUntil : null,
          provider_window: providerWindow === undefined
            ? null
            : { remaining: providerWindow.remaining, reset_at: providerWindow.resetAt },
          daily: { used: daily.used, limit: limit ?? null, reserve: daily.reserve() },
          queued: { sync: queues.sync.size, async: queues.async.size },
          keys: keys.size
        }
      })

    return { acquire, observe, reconfigure, snapshot }
  })
