import { errorMessage, InvalidRequest, Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { type ToolDefinition, ToolDefinition as ToolDefinitionSchema } from "@altan/domain/ToolDefinition"
import { ToolNotFound } from "@altan/domain/ToolWorker"
import { Redis } from "@altan/redis/Redis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { DatetimeParse } from "./builtin/Datetime.js"
import { EmailParse } from "./builtin/Email.js"
import { TextGenerate } from "./builtin/Generate.js"
import * as Google from "./builtin/Google.js"
import * as HttpTools from "./builtin/HttpRequest.js"
import * as HubSpot from "./builtin/HubSpot.js"
import { JsonExtract } from "./builtin/Json.js"
import * as Microsoft from "./builtin/Microsoft.js"
import * as Salesforce from "./builtin/Salesforce.js"
import * as Slack from "./builtin/Slack.js"
import { TextTemplate } from "./builtin/Text.js"
import { fromDefinition } from "./CustomTool.js"
import type { Tool } from "./Tool.js"

/** The tools available to a tenant: the built-ins plus the tenant's own. */
export class ToolRegistry extends Context.Tag("@altan/tool/ToolRegistry")<ToolRegistry, {
  readonly get: (tenantId: TenantId, toolId: string) => Effect.Effect<Tool, ToolNotFound | Unavailable>
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<Tool>, Unavailable>
  /** Adds or replaces one of the tenant's tools; a built-in id cannot be taken. */
  readonly put: (tenantId: TenantId, definition: ToolDefinition) => Effect.Effect<Tool, InvalidRequest | Unavailable>
  /** The tenant's definition of one of its tools, as it was written. */
  readonly definition: (
    tenantId: TenantId,
    toolId: string
  ) => Effect.Effect<Option.Option<ToolDefinition>, Unavailable>
  readonly remove: (tenantId: TenantId, toolId: string) => Effect.Effect<boolean, Unavailable>
}>() {}

/** The built-in tools, available to every tenant. */
export const builtins: ReadonlyArray<Tool> = [
  EmailParse,
  JsonExtract,
  TextTemplate,
  TextGenerate,
  DatetimeParse,
  ...HttpTools.tools,
  ...Slack.tools,
  ...HubSpot.tools,
  ...Salesforce.tools,
  ...Google.tools,
  ...Microsoft.tools
]

/** Hosts of the built-in vendors: every tenant may reach them, from built-in and custom tools alike. */
export const vendorHosts = (
  tools: ReadonlyArray<Tool>
): ReadonlyArray<string> => [...new Set(tools.flatMap((t) => t.hosts))]

/**
 * A registry held in memory. `extra` adds process-wide tools beside the built-ins (tests use it
 * to register probe tools).
 */
export const layerMemory = (
  options?: { readonly extra?: ReadonlyArray<Tool> | undefined }
): Layer.Layer<ToolRegistry> =>
  Layer.sync(ToolRegistry, () => {
    const shared = [...builtins, ...(options?.extra ?? [])]
    const sharedById = new Map(shared.map((t) => [t.spec.tool_id as string, t]))
    const hosts = vendorHosts(shared)
    const custom = new Map<TenantId, Map<string, { readonly definition: ToolDefinition; readonly tool: Tool }>>()
    const of = (tenantId: TenantId) => {
      let m = custom.get(tenantId)
      if (!m) custom.set(tenantId, m = new Map())
      return m
    }
    return {
      get: (tenantId, toolId) => {
        const tool = sharedById.get(toolId) ?? custom.get(tenantId)?.get(toolId)?.tool
        return tool ? Effect.succeed(tool) : Effect.fail(new ToolNotFound({ tool_id: toolId }))
      },
      list: (tenantId) =>
        Effect.sync(() => [...shared, ...[...(custom.get(tenantId)?.values() ?? [])].map((c) => c.tool)]),
      put: (tenantId, definition) =>
        Effect.suspend(() => {
          if (sharedById.has(definition.tool_id)) {
            return Effect.fail(
              new InvalidRequest({
                code: "invalid_tool",
                message: `${definition.tool_id} is a built-in tool; choose another tool_id`,
                details: { field: "tool_id" }
              })
            )
          }
          return Either.match(fromDefinition(definition, hosts), {
            onLeft: Effect.fail,
            onRight: (tool) => Effect.sync(() => (of(tenantId).set(definition.tool_id, { definition, tool }), tool))
          })
        }),
      definition: (tenantId, toolId) =>
        Effect.sync(() => Option.fromNullable(custom.get(tenantId)?.get(toolId)?.definition)),
      remove: (tenantId, toolId) => Effect.sync(() => custom.get(tenantId)?.delete(toolId) ?? false)
    }
  })

/**
 * The tenant tools in Redis, so every tool runner sees them: one hash per tenant, the definition as
 * written per tool. Compiled tools are kept per runner and rebuilt only when the stored definition
 * changes, so a call costs one `HGET`.
 */
export const layerRedis = (options?: {
  readonly prefix?: string
  readonly extra?: ReadonlyArray<Tool> | undefined
}): Layer.Layer<ToolRegistry, never, Redis> =>
  Layer.effect(
    ToolRegistry,
    Effect.gen(function*() {
      const { client } = yield* Redis
      const shared = [...builtins, ...(options?.extra ?? [])]
      const sharedById = new Map(shared.map((t) => [t.spec.tool_id as string, t]))
      const hosts = vendorHosts(shared)
      const prefix = options?.prefix ?? "altan"
      const key = (tenantId: TenantId) => `${prefix}:t:${tenantId}:tools`
      const decode = Schema.decodeUnknownSync(Schema.parseJson(ToolDefinitionSchema))
      const compiled = new Map<string, { readonly json: string; readonly tool: Tool }>()
      // compiled tools are found by tenant and tool id, so a cached call parses nothing
      const toolOf = (tenantId: TenantId, toolId: string, json: string): Tool => {
        const cacheKey = `${tenantId}/${toolId}`
        const hit = compiled.get(cacheKey)
        if (hit && hit.json === json) return hit.tool
        // stored definitions were validated on write; one that no longer compiles is a defect
        const tool = Either.getOrThrow(fromDefinition(decode(json), hosts))
        compiled.set(cacheKey, { json, tool })
        return tool
      }
      // the registry's storage being away is the caller's 503, not a defect: nothing was run
      const redis = <A>(f: () => Promise<A>) =>
        Effect.tryPromise({
          try: f,
          catch: (e) => new Unavailable({ message: `the tool registry cannot be read right now: ${errorMessage(e)}` })
        })
      return {
        get: (tenantId, toolId) => {
          const builtin = sharedById.get(toolId)
          if (builtin) return Effect.succeed(builtin)
          return redis(() => client.hget(key(tenantId), toolId)).pipe(
            Effect.flatMap((json) =>
              json === null
                ? Effect.fail(new ToolNotFound({ tool_id: toolId }))
                : Effect.sync(() => toolOf(tenantId, toolId, json))
            )
          )
        },
        list: (tenantId) =>
          redis(() => client.hgetall(key(tenantId))).pipe(
            Effect.map((all) => [...shared, ...Object.entries(all).map(([id, json]) => toolOf(tenantId, id, json))])
          ),
        put: (tenantId, definition) =>
          Effect.gen(function*() {
            if (sharedById.has(definition.tool_id)) {
              return yield* new InvalidRequest({
                code: "invalid_tool",
                message: `${definition.tool_id} is a built-in tool; choose another tool_id`,
                details: { field: "tool_id" }
              })
            }
            const tool = yield* fromDefinition(definition, hosts)
            const json = Schema.encodeSync(Schema.parseJson(ToolDefinitionSchema))(definition)
            yield* redis(() => client.hset(key(tenantId), definition.tool_id, json))
            return tool
          }),
        definition: (tenantId, toolId) =>
          redis(() => client.hget(key(tenantId), toolId)).pipe(
            Effect.map((json) => Option.map(Option.fromNullable(json), decode))
          ),
        remove: (tenantId, toolId) => redis(() => client.hdel(key(tenantId), toolId)).pipe(Effect.map((n) => n > 0))
      }
    })
  )
