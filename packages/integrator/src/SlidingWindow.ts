import type { RateLimit } from "@altan/domain/Settings"

/** Start times are compared with this slack (windows of fractional milliseconds, e.g. `per_seconds: 1/3`). */
const EPSILON = 1e-6

/**
 * A sliding-window log: at most `requests` call starts in any interval of `span` milliseconds. It holds the start
 * times of the last `requests` calls, oldest first, in a ring buffer (grown on demand up to `requests` entries):
 * a call may start at `now` when fewer than `requests` of them lie in `(now - span, now]`, that is once the ring
 * has room or from `oldest + span` on. Older starts cannot matter: the oldest of the last `requests` had to be out
 * of the window before the newest could start, and so had every start before it.
 *
 * Entries may lie in the future: after a pause the log holds made-up starts that pace the calls (see `pace`).
 */
export interface SlidingWindow {
  requests: number
  /** Milliseconds. */
  span: number
  ring: Array<number>
  /** Where the oldest entry is in `ring`. */
  head: number
  size: number
}

/** An empty log for `limit`; `margin` milliseconds are added to its span. */
export const make = (limit: RateLimit, margin: number): SlidingWindow => ({
  requests: limit.requests,
  span: limit.per_seconds * 1000 + margin,
  ring: [],
  head: 0,
  size: 0
})

/** The `i`-th entry, oldest first. */
const entry = (w: SlidingWindow, i: number): number => w.ring[(w.head + i) % w.ring.length]!

const setEntry = (w: SlidingWindow, i: number, value: number) => {
  w.ring[(w.head + i) % w.ring.length] = value
}

const entriesOf = (w: SlidingWindow): Array<number> => Array.from({ length: w.size }, (_, i) => entry(w, i))

/** Replaces the log by the newest `requests` of `entries` (ascending). */
const fill = (w: SlidingWindow, entries: ReadonlyArray<number>) => {
  w.ring = entries.slice(Math.max(0, entries.length - w.requests))
  w.head = 0
  w.size = w.ring.length
}

/** Records a start (in order, as clocks may step back), forgetting the oldest when the ring is full. */
export const record = (w: SlidingWindow, at: number) => {
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
export const forget = (w: SlidingWindow, at: number) => {
  for (let i = w.size - 1; i >= 0; i--) {
    if (entry(w, i) !== at) continue
    for (let j = i; j < w.size - 1; j++) setEntry(w, j, entry(w, j + 1))
    w.size -= 1
    return
  }
}

/** Whether a call may start at `now`. */
export const hasRoom = (w: SlidingWindow, now: number) => w.size < w.requests || entry(w, 0) + w.span <= now + EPSILON

/** Starts in the window ending at `now` (and made-up ones after it, see `pace`). */
export const startsIn = (w: SlidingWindow, now: number): number => {
  let n = 0
  for (let i = w.size - 1; i >= 0 && entry(w, i) + w.span > now + EPSILON; i--) n += 1
  return n
}

/**
 * When the `n`-th of the next calls may start, the first not before `from`, if they start as early as the window
 * lets them. With the log `l_1..l_N` (oldest first; missing entries are -Infinity), call `qN + r` (r in 1..N)
 * starts at `max(from + q * span, l_r + (q + 1) * span)`.
 */
export const timeFor = (w: SlidingWindow, from: number, n: number): number => {
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
export const reshape = (w: SlidingWindow, limit: RateLimit, now: number, margin: number) => {
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
export const pace = (w: SlidingWindow, until: number) => {
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
