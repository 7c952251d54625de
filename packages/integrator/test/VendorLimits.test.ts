import { describe, expect, it } from "@effect/vitest"
import * as VendorLimits from "../src/VendorLimits.js"

describe("VendorLimits", () => {
  it("vendor defaults; unknown providers and LLMs have none", () => {
    expect(VendorLimits.defaultsFor("slack")).toEqual({
      rate_limit: { requests: 50, per_seconds: 60 },
      perKey: { requests: 1, per_seconds: 1 }
    })
    expect(VendorLimits.defaultsFor("hubspot").rate_limit).toEqual({ requests: 100, per_seconds: 10 })
    expect(VendorLimits.defaultsFor("salesforce")).toEqual({})
    expect(VendorLimits.defaultsFor("llm:gpt-4")).toEqual({})
    expect(VendorLimits.defaultsFor("acme-crm")).toEqual({})
  })

  it("tenant settings replace the rate and daily limit, not the per-key limit", () => {
    expect(VendorLimits.effectiveLimits("slack", { rate_limit: { requests: 5, per_seconds: 1 }, daily_limit: 1000 }))
      .toEqual({
        rate_limit: { requests: 5, per_seconds: 1 },
        daily_limit: 1000,
        perKey: { requests: 1, per_seconds: 1 }
      })
    expect(VendorLimits.effectiveLimits("hubspot")).toEqual({
      rate_limit: { requests: 100, per_seconds: 10 },
      daily_limit: undefined,
      perKey: undefined
    })
    expect(VendorLimits.effectiveLimits("custom", { daily_limit: 10 }).daily_limit).toBe(10)
  })

  it("keyOf: Slack channel, Teams team, Gmail sends", () => {
    expect(VendorLimits.keyOf("teams.post_channel_message", { teamId: "T", channelId: "C" })).toBe("team:T")
    expect(VendorLimits.keyOf("gmail.send", {})).toBe("gmail.send")
    expect(VendorLimits.keyOf("gmail.list_messages", {})).toBe(undefined)
    expect(VendorLimits.keyOf("slack.post_message", null)).toBe(undefined)
  })
})
