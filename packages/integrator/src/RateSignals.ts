import { retryAfterMs } from "@altan/domain/RetryAfter"

/** A provider's answer to a call, as far as the budget cares. */
export interface ObservedResponse {
  readonly status: number
  /** The response headers, any case. */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** A `Retry-After` parsed elsewhere (e.g. `ToolFailed.retry_after_ms`); wins over the headers. */
  readonly retry_after_ms?: number | undefined
}

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
