import * as Schema from "effect/Schema"
import { BudgetName, BudgetPeriod } from "./Budget.js"
import { TaggedError } from "./TaggedError.js"

/*
 * The errors only a `Connection` raises (see `Connection.ts`, which re-exports them): its grant, its breaker, its
 * budget. Apart from `Connection.ts` so that `ToolWorker.ts` can name them in `ToolError` without importing the
 * Connection's contract, which imports it.
 */

/**
 * The call needs the tenant's connection to the provider, and there is none it can use: `missing` (no connection,
 * its secret is not stored, or its OAuth2 app was never authorized) or `needs_reauth` (the grant was lost: revoked,
 * or the refresh token expired). A task's step waits for it (`waiting_connection`) and goes on once it is connected;
 * `authorize_url` (a fresh single-use authorization) is there when the provider's OAuth2 app is configured.
 */
export class ConnectionRequired extends TaggedError<ConnectionRequired>()("ConnectionRequired", {
  provider: Schema.String,
  reason: Schema.Literal("missing", "needs_reauth"),
  authorize_url: Schema.optional(Schema.String)
}) {
  get code() {
    return "connection_required"
  }
  override get message() {
    return this.reason === "needs_reauth"
      ? `the ${this.provider} connection needs to be authorized again (its grant was lost): ` +
        `an admin must call POST /v1/connections/${this.provider}/authorize`
      : `the tenant has no usable ${this.provider} connection: an admin must connect it ` +
        `(PUT /v1/connections/${this.provider}, then its secret or POST /v1/connections/${this.provider}/authorize)`
  }
}

/** The provider's circuit breaker is open after repeated failures: calls fail fast until a probe succeeds. */
export class UpstreamUnavailable extends TaggedError<UpstreamUnavailable>()("UpstreamUnavailable", {
  provider: Schema.String,
  message: Schema.String,
  retry_after_ms: Schema.Number
}) {
  get code() {
    return "upstream_unavailable"
  }
}

/** The tenant's budget at the provider cannot fit the call before its deadline (a sync task's timeout). */
export class RateLimited extends TaggedError<RateLimited>()("RateLimited", {
  provider: Schema.String,
  message: Schema.String,
  retry_after_ms: Schema.Number
}) {
  get code() {
    return "rate_limited"
  }
}

/**
 * One of the tenant's spend budgets is used up for its period: the call is not made. A task's step (or model turn)
 * waits for `resets_at`, or for an admin to raise the limit (`PUT /v1/settings`).
 */
export class BudgetExhausted extends TaggedError<BudgetExhausted>()("BudgetExhausted", {
  budget: BudgetName,
  period: BudgetPeriod,
  limit: Schema.Number,
  used: Schema.Number,
  resets_at: Schema.String
}) {
  get code() {
    return "budget_exhausted"
  }
  override get message() {
    return `the tenant's ${this.budget} budget is used up for this ${this.period} (${this.used} of ${this.limit}); ` +
      `it resets at ${this.resets_at}, or an admin may raise it with PUT /v1/settings`
  }
}
