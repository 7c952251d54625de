import {
  type BudgetName,
  budgetNames,
  type BudgetPeriod,
  type Budgets,
  type BudgetUsage,
  noSpend,
  periodOf,
  type Spend
} from "@altan/domain/Budget"
import { BudgetExhausted } from "@altan/domain/Connection"
import type { TenantId } from "@altan/domain/Ids"
import { attempt, Redis } from "@altan/redis/Redis"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** A tenant's spend in the current UTC day and month. */
export interface PeriodSpend {
  readonly day: Spend
  readonly month: Spend
}

/**
 * What each tenant spent (LLM tokens, tool calls, LLM cost in USD) per UTC day and month, counted for the whole
 * cluster: every `Connection` adds what its calls spent, and asks before a call whether a budget is used up. A store
 * that cannot be reached fails with a `RedisError` defect (the caller's `Unavailable`); a count that cannot be added
 * is logged, never fails the call it counts.
 */
export class UsageMeter extends Context.Tag("@altan/integrator/UsageMeter")<UsageMeter, {
  readonly add: (tenantId: TenantId, spend: Partial<Spend>, nowMs: number) => Effect.Effect<void>
  readonly read: (tenantId: TenantId, nowMs: number) => Effect.Effect<PeriodSpend>
}>() {}

const periods: ReadonlyArray<BudgetPeriod> = ["day", "month"]

/** In-process counts: the embedded default and tests. Periods past are dropped when a tenant's count moves on. */
export const layerMemory: Layer.Layer<UsageMeter> = Layer.sync(UsageMeter, () => {
  const counts = new Map<string, { key: string; spend: Spend }>()
  const current = (tenantId: TenantId, period: BudgetPeriod, nowMs: number) => {
    const { key } = periodOf(period, nowMs)
    const entry = counts.get(`${tenantId}\u0000${period}`)
    return entry?.key === key ? entry.spend : noSpend
  }
  return UsageMeter.of({
    add: (tenantId, spend, nowMs) =>
      Effect.sync(() => {
        for (const period of periods) {
          const was = current(tenantId, period, nowMs)
          const next = { ...was }
          for (const name of budgetNames) next[name] += spend[name] ?? 0
          counts.set(`${tenantId}\u0000${period}`, { key: periodOf(period, nowMs).key, spend: next })
        }
      }),
    read: (tenantId, nowMs) =>
      Effect.sync(() => ({ day: current(tenantId, "day", nowMs), month: current(tenantId, "month", nowMs) }))
  })
})

/**
 * Counts in the process's Redis, shared by every integrator runner: `<prefix>:t:<tenant>:usage:<period key>`, a hash
 * of budget -> amount (`HINCRBYFLOAT`), kept a little past its period.
 */
export const layerRedis = (options?: { readonly prefix?: string }): Layer.Layer<UsageMeter, never, Redis> =>
  Layer.effect(
    UsageMeter,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const prefix = options?.prefix ?? "altan"
      const keyOf = (tenantId: TenantId, period: BudgetPeriod, nowMs: number) =>
        `${prefix}:t:${tenantId}:usage:${periodOf(period, nowMs).key}`
      const keepMs = { day: 3 * 86_400_000, month: 40 * 86_400_000 } as const
      return UsageMeter.of({
        add: (tenantId, spend, nowMs) =>
          attempt("usage HINCRBYFLOAT", async () => {
            const multi = client.multi()
            for (const period of periods) {
              const key = keyOf(tenantId, period, nowMs)
              for (const name of budgetNames) {
                const amount = spend[name] ?? 0
                if (amount !== 0) multi.hincrbyfloat(key, name, amount)
              }
              multi.pexpire(key, keepMs[period])
            }
            await multi.exec()
          }).pipe(
            Effect.catchAll((e) =>
              Effect.logWarning(`could not count the spend of tenant ${tenantId}: ${e.message}`).pipe(
                Effect.annotateLogs({ "tenant.id": tenantId })
              )
            )
          ),
        read: (tenantId, nowMs) =>
          attempt(
            "usage HMGET",
            () => Promise.all(periods.map((period) => client.hmget(keyOf(tenantId, period, nowMs), ...budgetNames)))
          ).pipe(
            Effect.map(([day, month]) => {
              const spendOf = (values: Array<string | null>): Spend =>
                Object.fromEntries(budgetNames.map((name, i) => [name, Number(values[i] ?? 0)])) as unknown as Spend
              return { day: spendOf(day!), month: spendOf(month!) }
            }),
            Effect.orDie
          )
      })
    })
  )

/**
 * Fails with `BudgetExhausted` when one of `names` is a budget of the tenant's and is used up in its period. Nothing is
 * read when the tenant has no such budget.
 */
export const admit = (
  meter: UsageMeter["Type"],
  tenantId: TenantId,
  budgets: Budgets | undefined,
  names: ReadonlyArray<BudgetName>
): Effect.Effect<void, BudgetExhausted> =>
  Effect.gen(function*() {
    const set = budgets === undefined ? [] : names.filter((name) => budgets[name] !== undefined)
    if (set.length === 0) return
    const nowMs = yield* Clock.currentTimeMillis
    const spent = yield* meter.read(tenantId, nowMs)
    for (const name of set) {
      const { limit, period } = budgets![name]!
      const used = spent[period][name]
      if (used >= limit) {
        return yield* new BudgetExhausted({
          budget: name,
          period,
          limit,
          used,
          resets_at: new Date(periodOf(period, nowMs).endsAt).toISOString()
        })
      }
    }
  })

/** `GET /v1/usage`: each budget's use this day and this month, with the tenant's limit where it set one. */
export const report = (
  meter: UsageMeter["Type"],
  tenantId: TenantId,
  budgets: Budgets | undefined
): Effect.Effect<ReadonlyArray<BudgetUsage>> =>
  Effect.gen(function*() {
    const nowMs = yield* Clock.currentTimeMillis
    const spent = yield* meter.read(tenantId, nowMs)
    return budgetNames.flatMap((name) =>
      periods.map((period): BudgetUsage => {
        const set = budgets?.[name]
        return {
          budget: name,
          period,
          used: spent[period][name],
          ...(set?.period === period ? { limit: set.limit } : {}),
          resets_at: new Date(periodOf(period, nowMs).endsAt).toISOString()
        }
      })
    )
  })
