import type { TenantId } from "@altan/domain/Ids"
import type { LlmConfig } from "@altan/domain/LlmConfig"
import { emptySettings, type Settings } from "@altan/domain/Settings"
import * as Redis from "@altan/redis/Redis"
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { Redis as IORedis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as TenantConfig from "../src/TenantConfig.js"

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `altan-test-${randomUUID().slice(0, 12)}`
const acme = "acme" as TenantId
const globex = "globex" as TenantId

/** Runs `f` with a connection of its own, outside the layers under test. */
const withClient = <A>(f: (client: IORedis) => Promise<A>): Effect.Effect<A> =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = new IORedis(url, { lazyConnect: true, maxRetriesPerRequest: 2 })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => f(client)),
    (client) => Effect.promise(() => client.quit())
  )

afterAll(() =>
  Effect.runPromise(withClient(async (client) => {
    const keys = await client.keys(`${prefix}:*`)
    if (keys.length > 0) await client.del(...keys)
  }))
)

/** One runner's store: a layer instance of its own, with its own connection and cache. */
const runner = (options?: Omit<TenantConfig.RedisOptions, "prefix">) =>
  Layer.build(TenantConfig.layerRedis({ prefix, ...options }).pipe(Layer.provide(Redis.layer({ url })))).pipe(
    Effect.map(Context.get(TenantConfig.TenantConfig))
  )

const gpt4: LlmConfig = {
  llm_id: "gpt-4",
  endpoint: "https://api.openai.com/v1/chat/completions",
  auth: { type: "api_key", key: "openai_api_key" },
  model: "gpt-4o",
  parameters: { max_tokens: 4096, temperature: 0.7 }
}
const local: LlmConfig = {
  llm_id: "local",
  endpoint: "http://127.0.0.1:11434/v1/chat/completions",
  auth: { type: "none" }
}
const settings: Settings = {
  default_llm: "gpt-4",
  fallback_llms: ["local"],
  egress_allowlist: ["api.example.com", "*.example.org:8443"],
  providers: { salesforce: { base_url: "https://acme.my.salesforce.com" } }
}

const defectMessage = <A>(exit: Exit.Exit<A>): string => {
  expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
  return Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""
}

describe("TenantConfig.layerRedis", () => {
  it.live("round-trips LLMs and settings", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      const tenant = "round-trip" as TenantId
      expect(yield* store.listLlms(tenant)).toEqual([])
      yield* store.putLlm(tenant, gpt4)
      yield* store.putLlm(tenant, local)
      expect(yield* store.getLlm(tenant, "gpt-4")).toEqual(Option.some(gpt4))
      expect(yield* store.getLlm(tenant, "local")).toEqual(Option.some(local))
      expect(yield* store.getLlm(tenant, "missing")).toEqual(Option.none())
      expect(yield* store.listLlms(tenant)).toEqual([gpt4, local])
      // a replacement is what the next read returns, even from the cache of the writing process
      const replaced = { ...gpt4, model: "gpt-4.1" }
      yield* store.putLlm(tenant, replaced)
      expect(yield* store.getLlm(tenant, "gpt-4")).toEqual(Option.some(replaced))
      expect(yield* store.deleteLlm(tenant, "gpt-4")).toBe(true)
      expect(yield* store.deleteLlm(tenant, "gpt-4")).toBe(false)
      expect(yield* store.getLlm(tenant, "gpt-4")).toEqual(Option.none())
      expect(yield* store.listLlms(tenant)).toEqual([local])

      expect(yield* store.getSettings(tenant)).toEqual(emptySettings)
      yield* store.putSettings(tenant, settings)
      expect(yield* store.getSettings(tenant)).toEqual(settings)
      yield* store.putSettings(tenant, emptySettings)
      expect(yield* store.getSettings(tenant)).toEqual(emptySettings)
    }).pipe(Effect.scoped))

  it.live("stores one hash of LLM JSON and one settings JSON string per tenant", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      const tenant = "layout" as TenantId
      yield* store.putLlm(tenant, gpt4)
      yield* store.putSettings(tenant, settings)
      const [llms, stored] = yield* withClient((c) =>
        Promise.all([c.hgetall(`${prefix}:t:layout:llms`), c.get(`${prefix}:t:layout:settings`)])
      )
      expect(Object.keys(llms)).toEqual(["gpt-4"])
      expect(JSON.parse(llms["gpt-4"]!)).toEqual(gpt4)
      expect(JSON.parse(stored!)).toEqual(settings)
    }).pipe(Effect.scoped))

  it.live("keeps tenants apart", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      const other = { ...gpt4, endpoint: "https://gateway.globex.test/v1/chat/completions", model: "other" }
      yield* store.putLlm(acme, gpt4)
      yield* store.putLlm(globex, other)
      yield* store.putSettings(acme, settings)
      expect(yield* store.getLlm(acme, "gpt-4")).toEqual(Option.some(gpt4))
      expect(yield* store.getLlm(globex, "gpt-4")).toEqual(Option.some(other))
      expect(yield* store.listLlms(globex)).toEqual([other])
      expect(yield* store.getSettings(globex)).toEqual(emptySettings)
      expect(yield* store.deleteLlm(globex, "local")).toBe(false)
      expect(yield* store.deleteLlm(globex, "gpt-4")).toBe(true)
      expect(yield* store.getLlm(acme, "gpt-4")).toEqual(Option.some(gpt4))
      expect(yield* store.getSettings(acme)).toEqual(settings)
    }).pipe(Effect.scoped))

  it.live("deletes nothing that is not there", () =>
    Effect.gen(function*() {
      const store = yield* runner()
      expect(yield* store.deleteLlm("nobody" as TenantId, "gpt-4")).toBe(false)
      expect(yield* store.getSettings("nobody" as TenantId)).toEqual(emptySettings)
    }).pipe(Effect.scoped))

  // TestClock drives the cache's TTL; Redis itself is real
  it.effect("another runner sees a write at once for keys it has not cached, within the TTL for the others", () =>
    Effect.gen(function*() {
      const tenant = "two-runners" as TenantId
      const first = yield* runner({ cacheTtl: "2 seconds" })
      const second = yield* runner({ cacheTtl: "2 seconds" })
      yield* first.putLlm(tenant, gpt4)
      // never read by the second runner: no cache entry, straight from Redis
      expect(yield* second.getLlm(tenant, "gpt-4")).toEqual(Option.some(gpt4))
      expect(yield* second.getSettings(tenant)).toEqual(emptySettings)

      yield* first.putLlm(tenant, local)
      yield* first.putSettings(tenant, settings)
      // cached by the second runner a moment ago
      expect(yield* second.listLlms(tenant)).toEqual([gpt4])
      expect(yield* second.getSettings(tenant)).toEqual(emptySettings)
      // ...and the writer reads its own writes
      expect(yield* first.listLlms(tenant)).toEqual([gpt4, local])
      expect(yield* first.getSettings(tenant)).toEqual(settings)

      yield* TestClock.adjust("2 seconds")
      expect(yield* second.listLlms(tenant)).toEqual([gpt4, local])
      expect(yield* second.getLlm(tenant, "local")).toEqual(Option.some(local))
      expect(yield* second.getSettings(tenant)).toEqual(settings)
    }).pipe(Effect.scoped))

  it.live("with cacheTtl 0 every read goes to Redis", () =>
    Effect.gen(function*() {
      const tenant = "uncached" as TenantId
      const first = yield* runner({ cacheTtl: 0 })
      const second = yield* runner({ cacheTtl: 0 })
      expect(yield* second.getLlm(tenant, "gpt-4")).toEqual(Option.none())
      expect(yield* second.getSettings(tenant)).toEqual(emptySettings)
      yield* first.putLlm(tenant, gpt4)
      yield* first.putSettings(tenant, settings)
      expect(yield* second.getLlm(tenant, "gpt-4")).toEqual(Option.some(gpt4))
      expect(yield* second.getSettings(tenant)).toEqual(settings)
    }).pipe(Effect.scoped))

  it.live("a stored value that does not decode is a defect naming its key, not a default", () =>
    Effect.gen(function*() {
      const tenant = "corrupt" as TenantId
      const llmsKey = `${prefix}:t:corrupt:llms`
      const settingsKey = `${prefix}:t:corrupt:settings`
      yield* withClient((c) =>
        Promise.all([
          c.hset(
            llmsKey,
            "broken",
            "{not json",
            "invalid",
            JSON.stringify({ ...gpt4, llm_id: "invalid", endpoint: "ftp://x" })
          ),
          c.hset(llmsKey, "gpt-4", JSON.stringify(gpt4)),
          c.set(settingsKey, "[]")
        ])
      )
      const store = yield* runner()
      const broken = defectMessage(yield* Effect.exit(store.getLlm(tenant, "broken")))
      expect(broken).toContain(llmsKey)
      expect(broken).toContain("broken")
      expect(defectMessage(yield* Effect.exit(store.getLlm(tenant, "invalid")))).toContain("http or https URL")
      expect(defectMessage(yield* Effect.exit(store.listLlms(tenant)))).toContain(llmsKey)
      // the tenant's other LLMs still answer
      expect(yield* store.getLlm(tenant, "gpt-4")).toEqual(Option.some(gpt4))
      expect(defectMessage(yield* Effect.exit(store.getSettings(tenant)))).toContain(settingsKey)
    }).pipe(Effect.scoped))

  it.live("a server that cannot be reached fails the layer, naming the host but no password", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Layer.build(
          TenantConfig.layerRedis({ prefix }).pipe(Layer.provide(Redis.layer({ url: "redis://:hunter2@127.0.0.1:1" })))
        )
      )
      expect(error._tag).toBe("RedisError")
      expect(error.message).toContain("redis://127.0.0.1:1")
      expect(error.message).not.toContain("hunter2")
    }).pipe(Effect.scoped))
})
