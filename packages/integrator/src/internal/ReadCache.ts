import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/**
 * A per-process read-through cache of keys (of Redis, or any store) with a short TTL. A write of this process
 * through `write` drops the key, and a read that was in flight during that write does not refill it, so this
 * process reads its own writes at once; another process's write is seen once the entry expires, within `ttl`
 * of the read that loaded it. Failed loads are not kept. A `ttl` of zero disables the cache. At most
 * `capacity` keys are kept; past it, expired entries go first, then the oldest.
 */
export interface ReadCache<A> {
  readonly enabled: boolean
  readonly read: <E>(key: string, load: Effect.Effect<A, E>) => Effect.Effect<A, E>
  readonly write: <B, E>(key: string, effect: Effect.Effect<B, E>) => Effect.Effect<B, E>
}

export const makeReadCache = <A>(ttl: Duration.DurationInput, capacity = 10_000): ReadCache<A> => {
  const ttlMs = Duration.toMillis(Duration.decode(ttl))
  const entries = new Map<string, { readonly value: A; readonly expiresAt: number }>()
  // the latest load of each key; a write removes it, so a load that raced a write is not kept
  const loading = new Map<string, object>()
  const store = (key: string, value: A, expiresAt: number, now: number) => {
    entries.delete(key)
    entries.set(key, { value, expiresAt })
    if (entries.size <= capacity) return
    for (const [k, e] of entries) if (e.expiresAt <= now) entries.delete(k)
    for (const k of entries.keys()) {
      if (entries.size <= capacity) break
      entries.delete(k)
    }
  }
  if (ttlMs <= 0) return { enabled: false, read: (_, load) => load, write: (_, effect) => effect }
  return {
    enabled: true,
    read: (key, load) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const hit = entries.get(key)
        if (hit && hit.expiresAt > now) return Effect.succeed(hit.value)
        const token = {}
        loading.set(key, token)
        return load.pipe(
          Effect.tap((value) => {
            if (loading.get(key) === token) store(key, value, now + ttlMs, now)
          }),
          Effect.ensuring(Effect.sync(() => {
            if (loading.get(key) === token) loading.delete(key)
          }))
        )
      }),
    write: (key, effect) =>
      Effect.ensuring(
        effect,
        Effect.sync(() => {
          entries.delete(key)
          loading.delete(key)
        })
      )
  }
}
