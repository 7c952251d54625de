import * as Schema from "effect/Schema"

/**
 * A tenant's spend budgets (settings `budgets`): LLM tokens, tool calls and LLM cost in USD, each per UTC day or month,
 * counted across the whole cluster. A task that would go past one waits (`waiting_budget`) until the period resets or
 * an admin raises the limit.
 */
export const BudgetName = Schema.Literal("llm_tokens", "tool_calls", "cost_usd")
export type BudgetName = typeof BudgetName.Type

export const BudgetPeriod = Schema.Literal("day", "month")
export type BudgetPeriod = typeof BudgetPeriod.Type

export const BudgetLimit = Schema.Struct({
  limit: Schema.Number.pipe(Schema.finite(), Schema.nonNegative()),
  period: BudgetPeriod
})
export type BudgetLimit = typeof BudgetLimit.Type

export const Budgets = Schema.Struct({
  llm_tokens: Schema.optional(BudgetLimit),
  tool_calls: Schema.optional(BudgetLimit),
  cost_usd: Schema.optional(BudgetLimit)
})
export type Budgets = typeof Budgets.Type

export const budgetNames: ReadonlyArray<BudgetName> = ["llm_tokens", "tool_calls", "cost_usd"]

/** What the tenant spent, or is about to: per budget. */
export type Spend = { readonly [K in BudgetName]: number }

export const noSpend: Spend = { llm_tokens: 0, tool_calls: 0, cost_usd: 0 }

/** The UTC period holding `nowMs`: its key (`2026-12-06`, `2026-12`) and when it ends (the next one starts). */
export const periodOf = (period: BudgetPeriod, nowMs: number): { readonly key: string; readonly endsAt: number } => {
  const d = new Date(nowMs)
  const year = d.getUTCFullYear()
  const month = d.getUTCMonth()
  return period === "day"
    ? { key: d.toISOString().slice(0, 10), endsAt: Date.UTC(year, month, d.getUTCDate() + 1) }
    : { key: d.toISOString().slice(0, 7), endsAt: Date.UTC(year, month + 1, 1) }
}

/** One budget's use in its current period (`GET /v1/usage`); `limit` when the tenant set one. */
export const BudgetUsage = Schema.Struct({
  budget: BudgetName,
  period: BudgetPeriod,
  used: Schema.Number,
  limit: Schema.optional(Schema.Number),
  resets_at: Schema.String
})
export type BudgetUsage = typeof BudgetUsage.Type

/** `GET /v1/usage`: every budget's use this UTC day and this month. */
export const UsageReport = Schema.Struct({ usage: Schema.Array(BudgetUsage) })
export type UsageReport = typeof UsageReport.Type

/** A budget spent: what a task waits for (`waiting_budget`), until `resets_at` or an admin raises `limit`. */
export const BudgetWait = Schema.Struct({
  budget: BudgetName,
  period: BudgetPeriod,
  limit: Schema.Number,
  used: Schema.Number,
  resets_at: Schema.String,
  requested_at: Schema.String
})
export type BudgetWait = typeof BudgetWait.Type
