import type * as Clock from "effect/Clock"
import * as jose from "jose"

/** How a remote key set is fetched and kept. */
export interface RemoteKeySetOptions {
  /** Least time between two fetches after a successful one, e.g. for an unknown `kid` (default 30 s). */
  readonly cooldownMs?: number
  /** Least time between two fetches after a failed one (default 5 s). */
  readonly retryMs?: number
  /** Age after which the set is fetched again before use (default 10 min); on failure the old set stays. */
  readonly maxAgeMs?: number
  /** Time limit of one fetch, body included (default 5 s). */
  readonly timeoutMs?: number
  /** Largest key set accepted (default 256 KiB). */
  readonly maxBytes?: number
  /** The fetch implementation (default `globalThis.fetch`). */
  readonly fetch?: typeof globalThis.fetch
  /** Told about each failed fetch, e.g. to log it; requests only see that the set is unavailable. */
  readonly onFailure?: (error: unknown) => void
  /** What the cooldowns and the set's age are measured with (default the system clock). */
  readonly clock?: Clock.Clock
}

/** The remote key set could not be fetched, or it is not a JWKS. */
export class KeySetUnavailable extends Error {}

const readLimited = async (response: Response, maxBytes: number): Promise<string> => {
  if (Number(response.headers.get("content-length") ?? 0) > maxBytes) {
    throw new KeySetUnavailable(`the key set is over ${maxBytes} bytes`)
  }
  if (response.body === null) return ""
  const reader = response.body.getReader()
  const chunks: Array<Uint8Array> = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel()
      throw new KeySetUnavailable(`the key set is over ${maxBytes} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString("utf8")
}

/**
 * A JWKS fetched from `url` and cached. Keys are selected by the token's `alg` and `kid` only; `jku`, `x5u`,
 * `jwk` and `x5c` headers are never looked at. Fetches are single-flight, and a new one starts at most once per
 * `cooldownMs` after a success (once per `retryMs` after a failure): a flood of tokens with unknown kids, or an
 * unreachable issuer, costs a bounded number of requests. A rotated-in key is found by the first refetch after
 * the cooldown; keys stay usable for as long as the set publishes them.
 */
export const make = (url: URL, options: RemoteKeySetOptions = {}): jose.JWTVerifyGetKey => {
  const cooldownMs = options.cooldownMs ?? 30_000
  const retryMs = options.retryMs ?? 5_000
  const maxAgeMs = options.maxAgeMs ?? 10 * 60_000
  const timeoutMs = options.timeoutMs ?? 5_000
  const maxBytes = options.maxBytes ?? 256 * 1024
  const fetchImpl = options.fetch ?? globalThis.fetch
  const clock = options.clock
  const now = clock === undefined ? Date.now : () => clock.unsafeCurrentTimeMillis()
  let keys: ReturnType<typeof jose.createLocalJWKSet> | undefined
  let fetchedAt = Number.NEGATIVE_INFINITY
  let attemptedAt = Number.NEGATIVE_INFINITY
  let lastFailed = false
  let pending: Promise<void> | undefined

  const load = async () => {
    const signal = AbortSignal.timeout(timeoutMs)
    const response = await fetchImpl(url, {
      redirect: "manual",
      signal,
      headers: { accept: "application/jwk-set+json, application/json" }
    })
    if (response.status !== 200) {
      await response.body?.cancel()
      throw new KeySetUnavailable(`the key set answered ${response.status}`)
    }
    const set = jose.createLocalJWKSet(JSON.parse(await readLimited(response, maxBytes)))
    keys = set
    fetchedAt = now()
  }

  /** Joins the fetch under way, or starts one when the last is old enough; true once a fetch has settled. */
  const refresh = async (): Promise<boolean> => {
    if (pending === undefined) {
      if (now() - attemptedAt < (lastFailed ? retryMs : cooldownMs)) return false
      attemptedAt = now()
      pending = load().then(
        () => {
          lastFailed = false
        },
        (error) => {
          lastFailed = true
          options.onFailure?.(error)
        }
      ).finally(() => {
        pending = undefined
      })
    }
    await pending
    return true
  }

  return async (header, token) => {
    if (keys === undefined || now() - fetchedAt >= maxAgeMs) await refresh()
    const current = keys
    if (current === undefined) throw new KeySetUnavailable("the key set could not be fetched")
    try {
      return await current(header, token)
    } catch (error) {
      if (!(error instanceof jose.errors.JWKSNoMatchingKey) || !(await refresh()) || keys === current) throw error
      return await keys!(header, token)
    }
  }
}
