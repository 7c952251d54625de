import { callMetrics } from "@altan/domain/Metrics"
import { retryAfterMs } from "@altan/domain/RetryAfter"
import type { ProviderSettings, RateLimit } from "@altan/domain/Settings"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"

/**
 * The call budget of one tenant at one provider, owned by its `Connection[tenant/provider]` actor. The actor is
 * a cluster singleton, so this in-memory budget holds across all runners without a distributed lock.
 *
 * - A sliding window (`rate_limit`): at most `requests` calls start in any `per_seconds` interval, whenever it
 *   begins (so 100 concurrent calls through 10/s start 10 at 0 s, 10 at 1 s, ..., 10 at 9 s; a token bucket would
 *   let up to twice the budget into the first second). Vendor limits such as HubSpot's "100 per 10 s" are such
 *   windows. Optionally one more window per `key` (`perKey`, e.g. one per Slack channel). A call counts in each.
 *   Each window is a log of the start times of its last `requests` calls (see `Window`).
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
   * Waits until the call may start and takes its share of the budget. Fails with `RateLimited` at once when it
   * could not start by `deadline`, or when it is `sync` and the daily allowance is spent. Without a deadline
   * the call waits (an `async` call also waits for the daily allowance). Interrupting a waiting call removes it
   * from the queue without spending anything.
   */
  readonly acquire: (request: AcquireRequest) => Effect.Effect<void, RateLimited>
  /** Learns from a provider's answer (any status): pauses, the provider's own window, the daily usage. */
  readonly observe: (response: ObservedResponse) => Effect.Effect<void>
  /** Applies new limits (e.g. changed tenant settings); a no-op when they are unchanged. */
  readonly reconfigure: (limits: Limits) => Effect.Effect<void>
  /** The budget right now, for inspection and metrics. */
  readonly snapshot: () => Effect.Effect<Snapshot>
}

/** A call the budget cannot start in time; `retry_after_ms` is when it could (an estimate). */
export class RateLimited extends Data.TaggedError("RateLimited")<{
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

export interface ObservedResponse {
  readonly status: number
  /** The response headers, any case. */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** A `Retry-After` parsed elsewhere (e.g. `ToolFailed.retry_after_ms`); wins over the headers. */
  readonly retry_after_ms?: number | undefined
}

/** The limits of one budget (see `effectiveLimits`); absent fields mean "no such limit". */
export interface Limits {
  readonly rate_limit?: RateLimit | undefined
  readonly daily_limit?: number | undefined
  /** One more window per `AcquireRequest.key`. */
  readonly perKey?: RateLimit | undefined
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
   * The calls `rate_limit` still lets start now: `requests` minus the starts in the last `per_seconds` (an integer;
   * the name is kept from the token bucket it replaced). After a pause it counts the paced starts (see `observe`)
   * as taken, so it stays low until they are out of the window. Pauses, the provider's window and the daily
   * allowance are not taken into account (see `paused_until`, `provider_window`, `daily`). Null without
   * `rate_limit`.
   */
  readonly tokens: number | null
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

// ---------------------------------------------------------------------------------------------------------------
// Vendor defaults

const perSecond = (requests: number, per_seconds = 1): RateLimit => ({ requests, per_seconds })

/**
 * The built-in budget of a provider, used unless the tenant sets its own. Conservative: a budget only slows
 * calls down, and 429s still pause it. Unknown providers and LLM endpoints (`llm:<id>`) have none.
 *
 * The key of `perKey` is what `keyOf` derives from a call.
 */
export const defaultsFor = (provider: string): Limits => {
  switch (provider) {
    // https://api.slack.com/apis/rate-limits: limits are per method per workspace; Tier 3 is 50+/min (Tier 2:
    // 20+/min, Tier 4: 100+/min), and chat.postMessage allows about 1 message per second per channel (short
    // bursts tolerated). 50/min overall, plus 1/s per channel.
    case "slack":
      return { rate_limit: perSecond(50, 60), perKey: perSecond(1) }
    // https://developers.hubspot.com/docs/api/usage-details: apps using OAuth get 100 requests per 10 seconds;
    // private apps 100/10 s (Free, Starter) or 150/10 s (Professional, Enterprise); daily limits (250,000 to
    // 1,000,000 by tier, reset at the account's midnight) are learnt from X-HubSpot-RateLimit-Daily(-Remaining).
    case "hubspot":
      return { rate_limit: perSecond(100, 10) }
    // Salesforce has no per-second limit but a rolling 24-hour API allowance that depends on edition and
    // licences (15,000 for Developer Edition; 100,000 + 1,000 per licence for Enterprise):
    // https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
    // A default daily limit would be wrong for most orgs, so none: every response carries
    // `Sforce-Limit-Info: api-usage=<used>/<limit>`, which sets the allowance from the first call on.
    case "salesforce":
      return {}
    // One connection serves Calendar and Gmail. Calendar: 600 requests per minute per user
    // (https://developers.google.com/calendar/api/guides/quota), hence 10/s. Gmail: 15,000 quota units per user
    // per minute and 100 units per messages.send (https://developers.google.com/gmail/api/reference/quota), so
    // at most 2.5 sends/s: key "gmail.send" at 2/s.
    case "google":
      return { rate_limit: perSecond(10), perKey: perSecond(2) }
    // https://learn.microsoft.com/en-us/graph/throttling-limits: Outlook allows 10,000 requests per 10 minutes
    // per app and mailbox (16/s); Teams 30-50 rps per app per tenant, and at most 4 rps per app on a given team
    // or channel: 16/s overall, 4/s per team.
    case "microsoft":
      return { rate_limit: perSecond(16), perKey: perSecond(4) }
    default:
      return {}
  }
}

/**
 * The limits of `provider` for a tenant: its `settings.providers[provider]` `rate_limit` and `daily_limit`
 * replace the defaults; `perKey` is always the vendor's.
 */
export const effectiveLimits = (
  provider: string,
  settings?: typeof ProviderSettings.Type | undefined
): Limits => {
  const builtIn = defaultsFor(provider)
  return {
    rate_limit: settings?.rate_limit ?? builtIn.rate_limit,
    daily_limit: settings?.daily_limit ?? builtIn.daily_limit,
    perKey: builtIn.perKey
  }
}

/** The `AcquireRequest.key` of a built-in tool call: what the vendor limits on its own. */
export const keyOf = (toolId: string, input: unknown): string | undefined => {
  const field = (name: string) => {
    const value = typeof input === "object" && input !== null ? (input as Record<string, unknown>)[name] : undefined
    return typeof value === "string" && value.length > 0 ? value : undefined
  }
  switch (toolId) {
    case "slack.post_message": {
      const channel = field("channel")
      return channel === undefined ? undefined : `channel:${channel}`
    }
    case "teams.post_channel_message": {
      const team = field("teamId")
      return team === undefined ? undefined : `team:${team}`
    }
    case "gmail.send":
      return "gmail.send"
    default:
      return undefined
  }
}

// ---------------------------------------------------------------------------------------------------------------
// What providers say

/** What one response says about the budget; times are epoch milliseconds. */
export interface Signals {
  /** Start nothing before this. */
  readonly pauseUntil?: number | undefined
  /** The provider's current window: `remaining` calls until `resetAt`. */
  readonly window?: { readonly remaining: number; readonly resetAt: number } | undefined
  /** The provider's count of the daily allowance. */
  readonly daily?: { readonly used: number; readonly limit: number } | undefined
}

const EPOCH_SECONDS = 1_000_000_000 // 2001-09-09 in seconds: no delay is that long
const EPOCH_MILLIS = 1_000_000_000_000

const integer = (value: string | undefined): number | undefined =>
  value !== undefined && /^-?\d+$/.test(value) ? Number(value) : undefined

/** `1s`, `6m0s`, `20ms`, `1h2m3.5s` (OpenAI's `x-ratelimit-reset-*`), in milliseconds. */
const goDuration = (value: string): number | undefined => {
  if (!/^(\d+(\.\d+)?(ms|h|m|s))+$/.test(value)) return undefined
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const
  let total = 0
  for (const [, amount, , u] of value.matchAll(/(\d+(\.\d+)?)(ms|h|m|s)/g)) {
    total += Number(amount) * unit[u as keyof typeof unit]
  }
  return total
}

/**
 * A `*-Reset` header as an epoch time. Numbers are read by size: from 10^12 epoch milliseconds, from 10^9
 * epoch seconds (GitHub, Twitter), below that seconds from now (the IETF `RateLimit-Reset`, many others).
 * Also a Go-style duration (`6m0s`) or an HTTP date.
 */
export const parseReset = (value: string, now: number): number | undefined => {
  if (/^\d+(\.\d+)?$/.test(value)) {
    const n = Number(value)
    if (n >= EPOCH_MILLIS) return n
    if (n >= EPOCH_SECONDS) return n * 1000
    return now + n * 1000
  }
  const duration = goDuration(value)
  if (duration !== undefined) return now + duration
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : date
}

/** Generic remaining/reset pairs: GitHub and most APIs, the IETF draft, OpenAI's request window. */
const windowHeaders: ReadonlyArray<readonly [remaining: string, reset: string]> = [
  ["x-ratelimit-remaining", "x-ratelimit-reset"],
  ["ratelimit-remaining", "ratelimit-reset"],
  ["x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
  ["x-rate-limit-remaining", "x-rate-limit-reset"]
]

/**
 * Reads a response:
 *
 * - 429 or 503 (and 403, GitHub's secondary limit) with `Retry-After`/`retry-after-ms`: pause until then; a 429
 *   without any hint pauses `defaultPauseMs`.
 * - `X-RateLimit-Remaining` + `X-RateLimit-Reset` (see `parseReset`) and the pairs above: 0 pauses until the
 *   reset (or `defaultPauseMs` without one); more is a window that our calls count down.
 * - HubSpot: `X-HubSpot-RateLimit-Remaining` over `X-HubSpot-RateLimit-Interval-Milliseconds` (a window ending at
 *   most one interval from now), `X-HubSpot-RateLimit-Secondly-Remaining: 0` (pause 1 s),
 *   `X-HubSpot-RateLimit-Daily` + `-Daily-Remaining` (the daily allowance).
 * - Salesforce: `Sforce-Limit-Info: api-usage=18/15000` (the org's rolling 24-hour usage and allowance).
 */
export const readSignals = (response: ObservedResponse, now: number, defaultPauseMs: number): Signals => {
  const headers = new Map<string, string>()
  for (const [name, value] of Object.entries(response.headers ?? {})) headers.set(name.toLowerCase(), value.trim())
  let pauseUntil: number | undefined
  let window: { remaining: number; resetAt: number } | undefined
  let daily: { used: number; limit: number } | undefined
  const pause = (until: number) => {
    if (pauseUntil === undefined || until > pauseUntil) pauseUntil = until
  }
  const countDown = (remaining: number, resetAt: number | undefined) => {
    if (remaining <= 0) pause(resetAt ?? now + defaultPauseMs)
    else if (resetAt !== undefined && resetAt > now && (window === undefined || remaining < window.remaining)) {
      window = { remaining, resetAt }
    }
  }

  const { status } = response
  // parsed here only when the caller has not (a tool's `ToolFailed.retry_after_ms`)
  const retryAfter = response.retry_after_ms ?? retryAfterMs(Object.fromEntries(headers), now)
  if (retryAfter !== undefined && (status === 429 || status === 503 || status === 403)) pause(now + retryAfter)

  for (const [remainingHeader, resetHeader] of windowHeaders) {
    const remaining = integer(headers.get(remainingHeader))
    if (remaining === undefined) continue
    const reset = headers.get(resetHeader)
    countDown(remaining, reset === undefined ? undefined : parseReset(reset, now))
  }

  const hubspotRemaining = integer(headers.get("x-hubspot-ratelimit-remaining"))
  if (hubspotRemaining !== undefined) {
    const interval = integer(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
    countDown(hubspotRemaining, interval === undefined ? undefined : now + interval)
  }
  if (integer(headers.get("x-hubspot-ratelimit-secondly-remaining")) === 0) pause(now + 1000)
  const hubspotDaily = integer(headers.get("x-hubspot-ratelimit-daily"))
  const hubspotDailyRemaining = integer(headers.get("x-hubspot-ratelimit-daily-remaining"))
  if (hubspotDaily !== undefined && hubspotDailyRemaining !== undefined && hubspotDaily > 0) {
    daily = { used: Math.max(0, hubspotDaily - hubspotDailyRemaining), limit: hubspotDaily }
  }

  const sforce = headers.get("sforce-limit-info")?.match(/(?:^|[\s,;])api-usage=(\d+)\/(\d+)/i)
  if (sforce && Number(sforce[2]) > 0) daily = { used: Number(sforce[1]), limit: Number(sforce[2]) }

  if (status === 429 && pauseUntil === undefined) pause(now + defaultPauseMs)
  return { pauseUntil, window, daily }
}

// ---------------------------------------------------------------------------------------------------------------
// The budget

/** Start times are compared with this slack (windows of fractional milliseconds, e.g. `per_seconds: 1/3`). */
const EPSILON = 1e-6
const DAY = 86_400_000
const SLOT = 5 * 60_000

/**
 * A sliding-window log: at most `requests` call starts in any interval of `span` milliseconds. It holds the start
 * times of the last `requests` calls, oldest first, in a ring buffer (grown on demand up to `requests` entries):
 * a call may start at `now` when fewer than `requests` of them lie in `(now - span, now]`, that is once the ring
 * has room or from `oldest + span` on. Older starts cannot matter: the oldest of the last `requests` had to be out
 * of the window before the newest could start, and so had every start before it.
 *
 * Entries may lie in the future: after a pause the log holds made-up starts that pace the calls (see `pace`).
 */
interface Window {
  requests: number
  /** Milliseconds. */
  span: number
  ring: Array<number>
  /** Where the oldest entry is in `ring`. */
  head: number
  size: number
}

const windowOf = (limit: RateLimit, margin: number): Window => ({
  requests: limit.requests,
  span: limit.per_seconds * 1000 + margin,
  ring: [],
  head: 0,
  size: 0
})

/** The `i`-th entry, oldest first. */
const entry = (w: Window, i: number): number => w.ring[(w.head + i) % w.ring.length]!

const setEntry = (w: Window, i: number, value: number) => {
  w.ring[(w.head + i) % w.ring.length] = value
}

const entriesOf = (w: Window): Array<number> => Array.from({ length: w.size }, (_, i) => entry(w, i))

/** Replaces the log by the newest `requests` of `entries` (ascending). */
const fill = (w: Window, entries: ReadonlyArray<number>) => {
  w.ring = entries.slice(Math.max(0, entries.length - w.requests))
  w.head = 0
  w.size = w.ring.length
}

/** Records a start (in order, as clocks may step back), forgetting the oldest when the ring is full. */
const record = (w: Window, at: number) => {
  if (w.size >= w.requests) {
    w.head = (w.head + 1) % w.ring.length
    w.size -= 1
  }
  if (w.size === w.ring.length) {
    const grown = entriesOf(w)
    grown.length = Math.min(w.requests, Math.max(4, 2 * w.size))
    w.ring = grown
    w.head = 0
  }
  let i = w.size
  while (i > 0 && entry(w, i - 1) > at) {
    setEntry(w, i, entry(w, i - 1))
    i -= 1
  }
  setEntry(w, i, at)
  w.size += 1
}

/** Forgets a start that was given back (the newest entry with that time, if it is still held). */
const forget = (w: Window, at: number) => {
  for (let i = w.size - 1; i >= 0; i--) {
    if (entry(w, i) !== at) continue
    for (let j = i; j < w.size - 1; j++) setEntry(w, j, entry(w, j + 1))
    w.size -= 1
    return
  }
}

const hasRoom = (w: Window, now: number) => w.size < w.requests || entry(w, 0) + w.span <= now + EPSILON

/** Starts in the window ending at `now` (and made-up ones after it, see `pace`). */
const startsIn = (w: Window, now: number): number => {
  let n = 0
  for (let i = w.size - 1; i >= 0 && entry(w, i) + w.span > now + EPSILON; i--) n += 1
  return n
}

/**
 * When the `n`-th of the next calls may start, the first not before `from`, if they start as early as the window
 * lets them. With the log `l_1..l_N` (oldest first; missing entries are -Infinity), call `qN + r` (r in 1..N)
 * starts at `max(from + q * span, l_r + (q + 1) * span)`.
 */
const timeFor = (w: Window, from: number, n: number): number => {
  const q = Math.floor((n - 1) / w.requests)
  const r = n - q * w.requests
  const missing = w.requests - w.size
  const after = r <= missing ? -Infinity : entry(w, r - missing - 1) + (q + 1) * w.span
  return Math.max(from + q * w.span, after)
}

/**
 * New limits for a log, keeping its history. Fewer requests keep the newest starts; more requests in a longer
 * span also need starts the log has forgotten: when it was full, they are assumed as late as the old limit
 * allowed (the start `requests` before one came at least `span` earlier), as far back as the new span reaches.
 */
const reshape = (w: Window, limit: RateLimit, now: number, margin: number) => {
  const entries = entriesOf(w)
  const requests = limit.requests
  const span = limit.per_seconds * 1000 + margin
  if (w.size > 0 && w.size >= w.requests && requests > w.size) {
    // newest first; each forgotten start is no later than the one after it, nor than the start `w.requests`
    // after it minus the old span
    entries.reverse()
    while (entries.length < requests) {
      const at = Math.min(entries[entries.length - 1]!, entries[entries.length - w.requests]! - w.span)
      if (at + span <= now) break
      entries.push(at)
    }
    entries.reverse()
  }
  w.requests = requests
  w.span = span
  fill(w, entries)
}

/**
 * Resuming after a pause that ends at `until`: not with a full window, but one call at `until`, then one per
 * `span / requests` (the budget's average rate) until the calls stop coming faster than that. The log gets the
 * made-up starts `until - span + i * span / requests` (i = 1..requests-1), merged with the real ones (the newest
 * `requests` of both are kept, so the stricter wins).
 */
const pace = (w: Window, until: number) => {
  const made = Array.from({ length: w.requests - 1 }, (_, i) => until - w.span + (i + 1) * w.span / w.requests)
  const real = entriesOf(w)
  const merged: Array<number> = []
  let a = 0
  let b = 0
  while (a < real.length || b < made.length) {
    merged.push(b >= made.length || (a < real.length && real[a]! <= made[b]!) ? real[a++]! : made[b++]!)
  }
  fill(w, merged)
}

const sameLimit = (a: RateLimit | undefined, b: RateLimit | undefined) =>
  a === b || (a !== undefined && b !== undefined && a.requests === b.requests && a.per_seconds === b.per_seconds)

interface Slot {
  readonly start: number
  count: number
}

/** The daily allowance: calls in 5-minute slots over a rolling 24 hours. */
const makeDaily = (reserveShare: number) => {
  const slots: Array<Slot> = []
  const self = {
    configured: undefined as number | undefined,
    reported: undefined as number | undefined,
    used: 0,
    slots,
    limit: (): number | undefined =>
      self.configured === undefined
        ? self.reported
        : self.reported === undefined
        ? self.configured
        : Math.min(self.configured, self.reported),
    reserve: () => {
      const limit = self.limit()
      return limit === undefined ? 0 : Math.floor(limit * reserveShare)
    },
    /** Calls that must remain for a call of this priority to go. */
    need: (priority: Priority) => priority === "sync" ? 1 : self.reserve() + 1,
    expire: (now: number) => {
      while (slots.length > 0 && slots[0]!.start + SLOT + DAY <= now) self.used -= slots.shift()!.count
    },
    canSpend: (priority: Priority) => {
      const limit = self.limit()
      return limit === undefined || limit - self.used >= self.need(priority)
    },
    /** When a call of this priority may go, as far as the allowance goes (Infinity: never). */
    readyAt: (priority: Priority, now: number): number => {
      const limit = self.limit()
      if (limit === undefined) return now
      const target = limit - self.need(priority)
      let used = self.used
      if (used <= target) return now
      for (const slot of slots) {
        used -= slot.count
        if (used <= target) return slot.start + SLOT + DAY
      }
      return Infinity
    },
    spend: (now: number, n = 1): Slot => {
      const start = now - (now % SLOT)
      let slot = slots[slots.length - 1]
      if (slot === undefined || slot.start !== start) slots.push(slot = { start, count: 0 })
      slot.count += n
      self.used += n
      return slot
    },
    refund: (slot: Slot) => {
      if (slot.count > 0 && slots.includes(slot)) {
        slot.count -= 1
        self.used -= 1
      }
    },
    /** The provider's count wins: more is added now, less is taken from the oldest slots. */
    report: (used: number, limit: number, now: number) => {
      self.reported = limit
      self.expire(now)
      const diff = used - self.used
      if (diff > 0) self.spend(now, diff)
      let excess = -diff
      for (const slot of slots) {
        if (excess <= 0) break
        const take = Math.min(slot.count, excess)
        slot.count -= take
        self.used -= take
        excess -= take
      }
      while (slots.length > 0 && slots[0]!.count === 0) slots.shift()
    }
  }
  return self
}

interface Waiter {
  readonly priority: Priority
  /** Only set when the budget has per-key limits. */
  readonly key: string | undefined
  readonly deadline: number | undefined
  readonly enqueuedAt: number
  readonly deferred: Deferred.Deferred<void, RateLimited>
  state: "queued" | "granted" | "gone"
  taken?: {
    readonly at: number
    readonly window: Window | undefined
    readonly keyWindow: Window | undefined
    readonly slot: Slot
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
    let window: Window | undefined
    const keys = new Map<string, Window>()
    /** Waiting calls per key, by priority. */
    const waitingByKey = new Map<string, { sync: number; async: number }>()
    let pausedUntil = 0
    let providerWindow: { remaining: number; resetAt: number } | undefined
    const daily = makeDaily(reserveShare)
    const queues: Record<Priority, Set<Waiter>> = { sync: new Set(), async: new Set() }
    let wake = Deferred.unsafeMake<void>(FiberId.none)
    const signal = () => Deferred.unsafeDone(wake, Exit.void)

    const configure = (next: Limits, now: number) => {
      // the logs keep their recent starts under new limits (see `reshape`)
      if (!sameLimit(next.rate_limit, limits.rate_limit)) {
        if (next.rate_limit === undefined) window = undefined
        else if (window === undefined) window = windowOf(next.rate_limit, margin)
        else reshape(window, next.rate_limit, now, margin)
      }
      if (!sameLimit(next.perKey, limits.perKey)) {
        if (next.perKey === undefined) keys.clear()
        else for (const kw of keys.values()) reshape(kw, next.perKey, now, margin)
      }
      daily.configured = next.daily_limit
      limits = next
    }
    configure({ rate_limit: options.rate_limit, daily_limit: options.daily_limit, perKey: options.perKey }, start)

    const keyOfWaiter = (key: string | undefined) => limits.perKey === undefined ? undefined : key

    const keyWindow = (key: string | undefined, now: number): Window | undefined => {
      if (key === undefined || limits.perKey === undefined) return undefined
      let found = keys.get(key)
      if (found === undefined) {
        if (keys.size >= maxKeys) {
          // a log whose starts are all out of the window, for a key nobody waits for, is the same as none
          for (const [k, kw] of keys) {
            if (startsIn(kw, now) === 0 && !waitingByKey.has(k)) keys.delete(k)
          }
        }
        keys.set(key, found = windowOf(limits.perKey, margin))
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
      if (window !== undefined) pace(window, until)
    }

    /** When a call arriving now would start, if it waited in line. */
    const estimate = (priority: Priority, key: string | undefined, now: number): number => {
      let at = Math.max(now, pausedUntil)
      const ahead = priority === "sync" ? queues.sync.size : queues.sync.size + queues.async.size
      if (window !== undefined) at = Math.max(at, timeFor(window, at, ahead + 1))
      if (providerWindow !== undefined && providerWindow.remaining <= ahead) at = Math.max(at, providerWindow.resetAt)
      const kw = keyWindow(key, now)
      if (kw !== undefined) {
        const counts = waitingByKey.get(key!)
        const aheadOnKey = counts === undefined ? 0 : priority === "sync" ? counts.sync : counts.sync + counts.async
        at = Math.max(at, timeFor(kw, now, aheadOnKey + 1))
      }
      return Math.max(at, daily.readyAt(priority, now))
    }

    const rateLimited = (message: string, at: number, now: number) =>
      new RateLimited({
        message: `${provider}: ${message}`,
        retry_after_ms: Number.isFinite(at) ? Math.max(1, Math.ceil(at - now)) : DAY
      })

    const dequeue = (w: Waiter) => {
      queues[w.priority].delete(w)
      countWaiting(w, -1)
    }

    const reject = (w: Waiter, error: RateLimited) => {
      dequeue(w)
      w.state = "gone"
      Deferred.unsafeDone(w.deferred, Exit.fail(error))
    }

    const grant = (w: Waiter, now: number) => {
      dequeue(w)
      const kw = keyWindow(w.key, now)
      if (window !== undefined) record(window, now)
      if (kw !== undefined) record(kw, now)
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
      if (taken.window !== undefined) forget(taken.window, taken.at)
      if (taken.keyWindow !== undefined) forget(taken.keyWindow, taken.at)
      daily.refund(taken.slot)
    }

    const next = (now: number): Waiter | undefined => {
      if (now < pausedUntil || (window !== undefined && !hasRoom(window, now))) return undefined
      for (const priority of priorities) {
        if (queues[priority].size === 0 || !daily.canSpend(priority)) continue
        const blocked = new Set<string>()
        for (const w of queues[priority]) {
          if (w.key !== undefined && blocked.has(w.key)) continue
          const kw = keyWindow(w.key, now)
          if (kw === undefined || hasRoom(kw, now)) return w
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
        const error = rateLimited("the daily API allowance is spent", daily.readyAt("sync", now), now)
        for (const w of queues.sync) reject(w, error)
      }
    }

    /** When something may start next, if anything waits. */
    const wakeAt = (now: number): number | undefined => {
      if (queues.sync.size + queues.async.size === 0) return undefined
      if (now < pausedUntil) return pausedUntil
      const globalAt = window === undefined ? now : timeFor(window, now, 1)
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
          keyAt = Math.min(keyAt, timeFor(kw, now, 1))
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

    const enqueue = (request: AcquireRequest, now: number): Waiter | RateLimited => {
      pump(now)
      const key = keyOfWaiter(request.key)
      if (request.priority === "sync" && !daily.canSpend("sync")) {
        return rateLimited("the daily API allowance is spent", daily.readyAt("sync", now), now)
      }
      if (request.deadline !== undefined) {
        const at = estimate(request.priority, key, now)
        if (at > request.deadline) return rateLimited("no call can start before the deadline", at, now)
      }
      const w: Waiter = {
        priority: request.priority,
        key,
        deadline: request.deadline,
        enqueuedAt: now,
        deferred: Deferred.unsafeMake<void, RateLimited>(FiberId.none),
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
        Exit.fail(rateLimited("no call could start before the deadline", estimate(w.priority, w.key, now), now))
      )
      signal()
    }

    const acquire = (request: AcquireRequest): Effect.Effect<void, RateLimited> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const w = enqueue(request, now)
          if (w instanceof RateLimited) return Effect.fail(w)
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
      ).pipe(
        Effect.withSpan("RateBudget.acquire", {
          attributes: {
            "altan.tenant_id": options.tenant,
            "altan.provider": provider,
            "altan.priority": request.priority
          },
          captureStackTrace: false
        })
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
                  reject(w, rateLimited(`paused by the provider (HTTP ${response.status})`, pausedUntil, now))
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
          tokens: window === undefined ? null : Math.max(0, window.requests - startsIn(window, now)),
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
