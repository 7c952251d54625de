const delay = /^\d+(\.\d+)?$/

/**
 * How long an upstream asks to wait, in milliseconds, from its response headers (names in lowercase):
 * `retry-after-ms` (OpenAI, Azure) when it is a number, else `Retry-After` as delay-seconds or an HTTP date
 * (RFC 9110 10.2.3), a date already past being 0. `undefined` when neither is there or parses.
 */
export const retryAfterMs = (
  headers: Readonly<Record<string, string | undefined>>,
  now: number = Date.now()
): number | undefined => {
  const ms = headers["retry-after-ms"]?.trim()
  if (ms !== undefined && delay.test(ms)) return Number(ms)
  const value = headers["retry-after"]?.trim()
  if (value === undefined || value === "") return undefined
  if (delay.test(value)) return Math.round(Number(value) * 1000)
  // every HTTP-date form names its day; `Date.parse` alone would take "-1" for a date in 2001
  if (!/[a-z]/i.test(value)) return undefined
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}
