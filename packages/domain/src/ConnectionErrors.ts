import * as Schema from "effect/Schema"
import { TaggedError } from "./TaggedError.js"

/*
 * The errors only a `Connection` raises (see `Connection.ts`, which re-exports them): its grant, its breaker, its
 * budget. Apart from `Connection.ts` so that `ToolWorker.ts` can name them in `ToolError` without importing the
 * Connection's contract, which imports it.
 */

/**
 * The tenant's OAuth2 connection to the provider lost its grant (revoked, expired refresh token):
 * an admin must connect it again (`POST /v1/connections/{provider}/authorize`).
 */
export class ConnectionNeedsReauth extends TaggedError<ConnectionNeedsReauth>()("ConnectionNeedsReauth", {
  provider: Schema.String
}) {
  get code() {
    return "connection_needs_reauth"
  }
  override get message() {
    return `the ${this.provider} connection needs to be authorized again: ` +
      `an admin must call POST /v1/connections/${this.provider}/authorize`
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
