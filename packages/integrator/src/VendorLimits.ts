import type { ProviderSettings, RateLimit } from "@altan/domain/Settings"

/** The limits of one budget (see `effectiveLimits`); absent fields mean "no such limit". */
export interface Limits {
  readonly rate_limit?: RateLimit | undefined
  readonly daily_limit?: number | undefined
  /** One more window per `AcquireRequest.key`. */
  readonly perKey?: RateLimit | undefined
}

const perSecond = (requests: number, per_seconds = 1): RateLimit => ({ requests, per_seconds })

/**
 * The built-in budget of a provider, used unless the tenant sets its own. Conservative: a budget only slows
 * calls down, and 429s still pause it. Unknown providers and LLM endpoints (`llm:<id>`) have none.
 *
 * The key of `perKey` is what `keyOf` derives from a call.
 */
export const defaultsFor = (provider: string): Limits => {
  switch (provider) {
    // https://api.slack.com/apis/rate-limits: limits are per method per workspace; Tier 3 is 50+/min (Tier 2:
    // 20+/min, Tier 4: 100+/min), and chat.postMessage allows about 1 message per second per channel (short
    // bursts tolerated). 50/min overall, plus 1/s per channel.
    case "slack":
      return { rate_limit: perSecond(50, 60), perKey: perSecond(1) }
    // https://developers.hubspot.com/docs/api/usage-details: apps using OAuth get 100 requests per 10 seconds;
    // private apps 100/10 s (Free, Starter) or 150/10 s (Professional, Enterprise); daily limits (250,000 to
    // 1,000,000 by tier, reset at the account's midnight) are learnt from X-HubSpot-RateLimit-Daily(-Remaining).
    case "hubspot":
      return { rate_limit: perSecond(100, 10) }
    // Salesforce has no per-second limit but a rolling 24-hour API allowance that depends on edition and
    // licences (15,000 for Developer Edition; 100,000 + 1,000 per licence for Enterprise):
    // https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
    // A default daily limit would be wrong for most orgs, so none: every response carries
    // `Sforce-Limit-Info: api-usage=<used>/<limit>`, which sets the allowance from the first call on.
    case "salesforce":
      return {}
    // One connection serves Calendar and Gmail. Calendar: 600 requests per minute per user
    // (https://developers.google.com/calendar/api/guides/quota), hence 10/s. Gmail: 15,000 quota units per user
    // per minute and 100 units per messages.send (https://developers.google.com/gmail/api/reference/quota), so
    // at most 2.5 sends/s: key "gmail.send" at 2/s.
    case "google":
      return { rate_limit: perSecond(10), perKey: perSecond(2) }
    // https://learn.microsoft.com/en-us/graph/throttling-limits: Outlook allows 10,000 requests per 10 minutes
    // per app and mailbox (16/s); Teams 30-50 rps per app per tenant, and at most 4 rps per app on a given team
    // or channel: 16/s overall, 4/s per team.
    case "microsoft":
      return { rate_limit: perSecond(16), perKey: perSecond(4) }
    default:
      return {}
  }
}

/**
 * The limits of `provider` for a tenant: its `settings.providers[provider]` `rate_limit` and `daily_limit`
 * replace the defaults; `perKey` is always the vendor's.
 */
export const effectiveLimits = (
  provider: string,
  settings?: typeof ProviderSettings.Type | undefined
): Limits => {
  const builtIn = defaultsFor(provider)
  return {
    rate_limit: settings?.rate_limit ?? builtIn.rate_limit,
    daily_limit: settings?.daily_limit ?? builtIn.daily_limit,
    perKey: builtIn.perKey
  }
}

/** The `AcquireRequest.key` of a built-in tool call: what the vendor limits on its own. */
export const keyOf = (toolId: string, input: unknown): string | undefined => {
  const field = (name: string) => {
    const value = typeof input === "object" && input !== null ? (input as Record<string, unknown>)[name] : undefined
    return typeof value === "string" && value.length > 0 ? value : undefined
  }
  switch (toolId) {
    case "slack.post_message": {
      const channel = field("channel")
      return channel === undefined ? undefined : `channel:${channel}`
    }
    case "teams.post_channel_message": {
      const team = field("teamId")
      return team === undefined ? undefined : `team:${team}`
    }
    case "gmail.send":
      return "gmail.send"
    default:
      return undefined
  }
}
