import { errorMessage } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { Redis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** How an execution ended, as recorded: the tool's output, or the fields of its `ToolFailed`. */
export type Outcome =
  | { readonly ok: { readonly output: unknown } }
  | { readonly failed: { readonly message: string } & Record<string, unknown> }

/** What a claim on an execution key found. */
export type Claim =
  /** Nobody ran this key before: the caller runs it now. */
  | { readonly _tag: "Claimed" }
  /** An earlier execution finished with this outcome. */
  | { readonly _tag: "Done"; readonly outcome: Outcome }
  /**
   * An earlier execution started and has not recorded an outcome: still running (`alive`: its runner renewed
   * its lease lately), or lost.
   */
  | { readonly _tag: "Started"; readonly runner: string; readonly deadline: number; readonly alive: boolean }

/** The ledger could not be read or written; nothing was executed. */
export class LedgerUnavailable extends Data.TaggedError("LedgerUnavailable")<{ readonly message: string }> {}

/**
 * The tool service's record of executions of calls with side effects, by execution key (task, step, tool,
 * attempt, try). A key is claimed before the call goes out and its outcome recorded when it returns, so a
 * redelivered or repeated execution never calls the vendor a second time: it gets the first outcome, or learns
 * that the first one started and never finished.
 */
export class ExecutionLedger extends Context.Tag("@altan/tool/ExecutionLedger")<ExecutionLedger, {
  /** Claims `key` for an execution by `runner` that will be over by `deadline` (epoch ms). */
  readonly claim: (
    tenantId: TenantId,
    toolId: string,
    key: string,
    started: { readonly runner: string; readonly deadline: number }
  ) => Effect.Effect<Claim, LedgerUnavailable>
  /** Renews the lease of a running execution of `key`: it is alive for `leaseMillis` more. */
  readonly renew: (tenantId: TenantId, toolId: string, key: string) => Effect.Effect<void, LedgerUnavailable>
  /** Records how the execution of `key` ended. */
  readonly finish: (
    tenantId: TenantId,
    toolId: string,
    key: string,
    outcome: Outcome
  ) => Effect.Effect<void, LedgerUnavailable>
  /** The current record of `key`, if any. */
  readonly read: (tenantId: TenantId, toolId: string, key: string) => Effect.Effect<Claim, LedgerUnavailable>
}>() {}

type Entry =
  | { readonly state: "started"; readonly runner: string; readonly deadline: number }
  | { readonly state: "done"; readonly outcome: Outcome }

/**
 * How long an execution counts as alive after its runner last renewed its lease. A runner renews every
 * `leaseMillis / 3`, so one that died is known dead within a few seconds, not at the call's deadline.
 */
export const leaseMillis = 6_000

const claimOf = (entry: Entry | undefined, alive: boolean): Claim =>
  entry === undefined
    ? { _tag: "Claimed" }
    : entry.state === "done"
    ? { _tag: "Done", outcome: entry.outcome }
    : { _tag: "Started", runner: entry.runner, deadline: entry.deadline, alive }

const entryKey = (tenantId: TenantId, toolId: string, key: string) => `${tenantId}:${toolId}:${key}`

/**
 * Claims a key and starts its lease in one step: a lease is never renewed for a record someone else made. The same
 * claim sent again (ioredis resends a command whose answer was lost) is answered as claimed, not as started.
 */
const claimScript = `if redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2], "NX") then
  redis.call("SET", KEYS[2], "1", "PX", ARGV[3])
  return 1
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return 1
end
return 0`

/** Default time a record is kept: far longer than any redelivery of the call that made it. */
const defaultTtl = Duration.hours(24)

/**
 * In-process ledger: the embedded runtime (one process, so one ledger) and tests. Entries expire after `ttl`; at most
 * `maxEntries` (default 100 000) are kept.
 */
export const layerMemory = (
  options?: { readonly ttl?: Duration.DurationInput; readonly maxEntries?: number }
): Layer.Layer<ExecutionLedger> => Layer.sync(ExecutionLedger, () => makeMemory(options))

/** The in-process ledger itself (tests hold it to look at, or set up, what a crashed runner left). */
export const makeMemory = (
  options?: { readonly ttl?: Duration.DurationInput; readonly maxEntries?: number }
): ExecutionLedger["Type"] => {
  const ttl = Duration.toMillis(options?.ttl ?? defaultTtl)
  const maxEntries = Math.max(1, options?.maxEntries ?? 100_000)
  // insertion order is creation order, so expired entries are at the front
  const entries = new Map<string, { entry: Entry; readonly expiresAt: number; leaseUntil: number }>()
  const sweep = (now: number) => {
    for (const [key, { expiresAt }] of entries) {
      if (expiresAt > now) break
      entries.delete(key)
    }
  }
  const claimAt = (key: string) => {
    const now = Date.now()
    sweep(now)
    const found = entries.get(key)
    return claimOf(found?.entry, found !== undefined && found.leaseUntil > now)
  }
  return ExecutionLedger.of({
    claim: (tenantId, toolId, key, started) =>
      Effect.sync(() => {
        const k = entryKey(tenantId, toolId, key)
        const existing = claimAt(k)
        if (existing._tag !== "Claimed") return existing
        const now = Date.now()
        entries.set(k, { entry: { state: "started", ...started }, expiresAt: now + ttl, leaseUntil: now + leaseMillis })
        // bounded: past `maxEntries` the oldest go first, as if their TTL had passed
        if (entries.size > maxEntries) entries.delete(entries.keys().next().value!)
        return existing
      }),
    renew: (tenantId, toolId, key) =>
      Effect.sync(() => {
        const found = entries.get(entryKey(tenantId, toolId, key))
        if (found) found.leaseUntil = Date.now() + leaseMillis
      }),
    finish: (tenantId, toolId, key, outcome) =>
      Effect.sync(() => {
        const k = entryKey(tenantId, toolId, key)
        const expiresAt = entries.get(k)?.expiresAt ?? Date.now() + ttl
        entries.set(k, { entry: { state: "done", outcome }, expiresAt, leaseUntil: 0 })
      }),
    read: (tenantId, toolId, key) => Effect.sync(() => claimAt(entryKey(tenantId, toolId, key)))
  })
}

/**
 * The ledger in Redis, shared by every tool runner, so an execution started on a runner that died is known to
 * the one that takes over its tools: `SET NX` claims a key, the outcome overwrites it; both expire after `ttl`.
 * An entry that does not parse is treated as started with an unknown outcome: never as free to run again.
 */
export const layerRedis = (
  options?: { readonly prefix?: string; readonly ttl?: Duration.DurationInput }
): Layer.Layer<ExecutionLedger, never, Redis> =>
  Layer.effect(
    ExecutionLedger,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const prefix = `${options?.prefix ?? "altan"}:t:`
      const px = Math.max(1, Duration.toMillis(options?.ttl ?? defaultTtl))
      const redisKey = (tenantId: TenantId, toolId: string, key: string) => `${prefix}${tenantId}:x:${toolId}:${key}`
      const run = <A>(operation: string, f: () => Promise<A>) =>
        Effect.tryPromise({
          try: f,
          catch: (e) => new LedgerUnavailable({ message: `execution ledger ${operation}: ${errorMessage(e)}` })
        })
      const parse = (raw: string | null, alive: boolean): Claim => {
        if (raw === null) return { _tag: "Claimed" }
        try {
          return claimOf(JSON.parse(raw) as Entry, alive)
        } catch {
          return { _tag: "Started", runner: "unknown", deadline: 0, alive: false }
        }
      }
      const readClaim = (k: string) =>
        Effect.map(
          run("read", () => client.multi().get(k).exists(`${k}:lease`).exec()),
          (results) => parse((results?.[0]?.[1] ?? null) as string | null, results?.[1]?.[1] === 1)
        )
      return ExecutionLedger.of({
        claim: (tenantId, toolId, key, started) => {
          const k = redisKey(tenantId, toolId, key)
          const entry = JSON.stringify({ state: "started", ...started } satisfies Entry)
          const attempt = (left: number): Effect.Effect<Claim, LedgerUnavailable> =>
            Effect.gen(function*() {
              const claimed = yield* run(
                "claim",
                () => client.eval(claimScript, 2, k, `${k}:lease`, entry, px, leaseMillis)
              )
              if (claimed === 1) return { _tag: "Claimed" } as const
              const claim = yield* readClaim(k)
              // expired between the two commands: claim again
              return claim._tag === "Claimed" && left > 0 ? yield* attempt(left - 1) : claim
            })
          return attempt(2)
        },
        renew: (tenantId, toolId, key) =>
          run("renew", () => client.set(`${redisKey(tenantId, toolId, key)}:lease`, "1", "PX", leaseMillis)).pipe(
            Effect.asVoid
          ),
        finish: (tenantId, toolId, key, outcome) => {
          const k = redisKey(tenantId, toolId, key)
          return run(
            "finish",
            () => client.multi().set(k, JSON.stringify({ state: "done", outcome }), "PX", px).del(`${k}:lease`).exec()
          ).pipe(Effect.asVoid)
        },
        read: (tenantId, toolId, key) => readClaim(redisKey(tenantId, toolId, key))
      })
    })
  )
