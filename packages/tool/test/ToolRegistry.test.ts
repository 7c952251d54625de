import type { TenantId } from "@altan/domain/Ids"
import * as SharedRedis from "@altan/redis/Redis"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import { layerRedis, ToolRegistry } from "../src/ToolRegistry.js"

const url = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const a = "tenant-a" as TenantId
const b = "tenant-b" as TenantId
const definition = {
  tool_id: "slack_notify" as any,
  name: "Send Slack Notification",
  description: "Sends a message to a Slack channel",
  parameters: [
    { name: "channel_id", type: "string" as const, required: true },
    { name: "message", type: "string" as const, required: true }
  ],
  endpoint: "https://slack.com/api/chat.postMessage",
  method: "POST" as const,
  auth: "oauth2" as const
}

describe("ToolRegistry.layerRedis", () => {
  it.live("shares a tenant's tools between runners and keeps tenants apart", () =>
    Effect.gen(function*() {
      const prefix = `test-${randomBytes(5).toString("hex")}`
      // two registries over one Redis, each with its connection: two tool runners
      const runner = Layer.build(layerRedis({ prefix }).pipe(Layer.provide(SharedRedis.layer({ url }))))
      const runner1 = Context.get(yield* runner, ToolRegistry)
      const runner2 = Context.get(yield* runner, ToolRegistry)
      yield* runner1.put(a, definition)
      const seen = yield* runner2.get(a, "slack_notify")
      expect(seen.spec).toMatchObject({ tool_id: "slack_notify", provider: "slack", builtin: false })
      expect(Option.getOrThrow(yield* runner2.definition(a, "slack_notify")).endpoint).toBe(definition.endpoint)
      // tenant B sees none of it
      expect((yield* Effect.flip(runner2.get(b, "slack_notify")))._tag).toBe("ToolNotFound")
      expect((yield* runner2.list(b)).some((t) => t.spec.tool_id === "slack_notify")).toBe(false)
      expect(yield* runner2.remove(b, "slack_notify")).toBe(false)
      // a change on one runner is what the other runs next
      yield* runner1.put(a, { ...definition, name: "Renamed" })
      expect((yield* runner2.get(a, "slack_notify")).spec.name).toBe("Renamed")
      expect((yield* Effect.flip(runner1.put(a, { ...definition, tool_id: "email.parse" as any }))).details).toEqual({
        field: "tool_id"
      })
      expect(yield* runner2.remove(a, "slack_notify")).toBe(true)
      expect((yield* Effect.flip(runner1.get(a, "slack_notify")))._tag).toBe("ToolNotFound")
      const redis = new Redis(url)
      const keys = yield* Effect.promise(() => redis.keys(`${prefix}:*`))
      if (keys.length > 0) yield* Effect.promise(() => redis.del(...keys))
      redis.disconnect()
    }).pipe(Effect.scoped))
})
