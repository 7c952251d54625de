import { toolShardGroup, toolShardGroups, ToolWorker } from "@altan/domain/ToolWorker"
import { describe, expect, it } from "@effect/vitest"

describe("tool shard groups", () => {
  it("puts a built-in vendor's tools in the vendor's group and everything else in `tool`", () => {
    expect(toolShardGroup("slack.post_message")).toBe("tool-slack")
    expect(toolShardGroup("gmail.send")).toBe("tool-google")
    expect(toolShardGroup("google_calendar.create_event")).toBe("tool-google")
    expect(toolShardGroup("teams.post_channel_message")).toBe("tool-microsoft")
    expect(toolShardGroup("email.parse")).toBe("tool")
    expect(toolShardGroup("slack_notify")).toBe("tool") // a tenant's tool: no vendor namespace
    expect(toolShardGroup("_catalog")).toBe("tool")
  })

  it("derives the group from the entity id and lists every group a runner may host", () => {
    expect(ToolWorker.getShardGroup("tenant-a/salesforce.query" as any)).toBe("tool-salesforce")
    expect(ToolWorker.getShardGroup("tenant-a/_catalog" as any)).toBe("tool")
    expect(toolShardGroups).toEqual([
      "tool",
      "tool-slack",
      "tool-hubspot",
      "tool-salesforce",
      "tool-google",
      "tool-microsoft"
    ])
  })
})
