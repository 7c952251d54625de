import type { TenantId } from "@altan/domain/Ids"
import { canonicalJson } from "@altan/domain/Json"
import { Redis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"

/** The cache key of one call: tenant, tool and input; a tenant never reads another's entries. */
export const cacheKey = (tenantId: TenantId, toolId: string, input: unknown) =>
  `${tenantId}:${toolId}:${createHash("sha256").update(canonicalJson(input)).digest("base64url")}`

/** Outputs of cacheable tools (reads without side effects), per tenant + tool + canonical input. */
export class ToolCache extends Context.Tag("@altan/tool/ToolCache")<ToolCache, {
  readonly get: (key: string) => Effect.Effect<Option.Option<unknown>>
  readonly set: (key: string, output: unknown) => Effect.Effect<void>
}>() {}

/** In-process cache with a TTL and a bound on entries (oldest dropped first). */
export const layerMemory = (options?: { readonly ttl?: Duration.DurationInput; readonly maxEntries?: number }) =>
  Layer.sync(ToolCache, () => {
    const ttl = Duration.toMillis(options?.ttl ?? Duration.minutes(1))
    const max = options?.maxEntries ?? 10_000
    const entries = new Map<string, { readonly at: number; readonly output: unknown }>()
    return {
      get: (key) =>
        Effect.sync(() => {
          const hit = entries.get(key)
          if (!hit) return Option.none()
          if (Date.now() - hit.at > ttl) {
            entries.delete(key)
            return Option.none()
          }
          return Option.some(hit.output)
        }),
      set: (key, output) =>
        Effect.sync(() => {
          entries.delete(key)
          entries.set(key, { at: Date.now(), output })
          if (entries.size > max) entries.delete(entries.keys().next().value!)
        })
    }
  })

/** The cache in Redis with a TTL, shared by every tool runner; failures of the cache never fail a call. */
export const layerRedis = (
  options?: { readonly prefix?: string; readonly ttl?: Duration.DurationInput }
): Layer.Layer<ToolCache, never, Redis> =>
  Layer.effect(
    ToolCache,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const prefix = `${options?.prefix ?? "altan"}:cache:`
      const ttl = Duration.toMillis(options?.ttl ?? Duration.minutes(1))
      return {
        get: (key) =>
          // parsed inside the try: an entry that is not JSON is a miss, not a defect
          Effect.tryPromise(async () => {
            const value = await client.get(prefix + key)
            return value === null ? Option.none() : Option.some(JSON.parse(value) as unknown)
          }).pipe(Effect.orElseSucceed(() => Option.none())),
        set: (key, output) =>
          Effect.tryPromise(() => client.set(prefix + key, JSON.stringify(output), "PX", ttl)).pipe(Effect.ignore)
      }
    })
  )
