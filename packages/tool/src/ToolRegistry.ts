import { errorMessage, InvalidRequest, Unavailable } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import {
  type McpImportedTool,
  type McpServer,
  McpServer as McpServerSchema,
  mcpServerOfTool
} from "@altan/domain/McpServers"
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
import { fromImported } from "./McpTool.js"
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
  /** Adds or replaces one of the tenant's remote MCP servers, with the tools imported from it. */
  readonly putMcpServer: (tenantId: TenantId, server: McpServer) => Effect.Effect<void, Unavailable>
  readonly getMcpServer: (tenantId: TenantId, serverId: string) => Effect.Effect<Option.Option<McpServer>, Unavailable>
  readonly listMcpServers: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<McpServer>, Unavailable>
  /** Forgets the server and its tools. */
  readonly removeMcpServer: (tenantId: TenantId, serverId: string) => Effect.Effect<boolean, Unavailable>
}>() {}

/** Where a registry keeps a tenant's MCP servers: the same few operations in memory or in Redis. */
interface McpServerStorage {
  readonly get: (tenantId: TenantId, serverId: string) => Effect.Effect<Option.Option<McpServer>, Unavailable>
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<McpServer>, Unavailable>
  readonly put: (tenantId: TenantId, server: McpServer) => Effect.Effect<void, Unavailable>
  readonly remove: (tenantId: TenantId, serverId: string) => Effect.Effect<boolean, Unavailable>
}

/**
 * The registry's MCP part over its storage: a tool id `mcp.<server>.<name>` is found in its server's record, and
 * compiled once per version of that record (its `refreshed_at`).
 */
const mcpPart = (storage: McpServerStorage) => {
  const compiled = new Map<string, { readonly version: string; readonly tool: Tool }>()
  const toolOf = (tenantId: TenantId, server: McpServer, imported: McpImportedTool): Tool | undefined => {
    const cacheKey = `${tenantId}/${imported.tool_id}`
    const version = `${server.refreshed_at}|${server.url}|${server.connection ?? ""}`
    const hit = compiled.get(cacheKey)
    if (hit && hit.version === version) return hit.tool
    // schemas were compiled when imported; one that no longer does is left out
    const tool = Either.getOrUndefined(fromImported(server, imported))
    if (tool) compiled.set(cacheKey, { version, tool })
    return tool
  }
  return {
    get: (tenantId: TenantId, toolId: string) => {
      const serverId = mcpServerOfTool(toolId)
      if (serverId === undefined) return Effect.succeed(Option.none<Tool>())
      return Effect.map(storage.get(tenantId, serverId), (server) =>
        Option.flatMap(server, (s) => {
          const imported = s.imported.find((t) => t.tool_id === toolId)
          return Option.fromNullable(imported && toolOf(tenantId, s, imported))
        }))
    },
    list: (tenantId: TenantId) =>
      Effect.map(
        storage.list(tenantId),
        (servers) => servers.flatMap((s) => s.imported.flatMap((t) => toolOf(tenantId, s, t) ?? []))
      ),
    methods: {
      putMcpServer: storage.put,
      getMcpServer: storage.get,
      listMcpServers: storage.list,
      removeMcpServer: storage.remove
    }
  }
}

/** A tool id a tenant cannot define: a built-in's, or one of the `mcp.<server>.` ids of imported MCP tools. */
const reserved = (toolId: string) =>
  new InvalidRequest({
    code: "invalid_tool",
    message: mcpServerOfTool(toolId) !== undefined
      ? `${toolId}: ids under mcp.<server_id>. are the tools of a tenant's MCP servers; choose another tool_id`
      : `${toolId} is a built-in tool; choose another tool_id`,
    details: { field: "tool_id" }
  })

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
    const servers = new Map<TenantId, Map<string, McpServer>>()
    const mcp = mcpPart({
      get: (tenantId, serverId) => Effect.sync(() => Option.fromNullable(servers.get(tenantId)?.get(serverId))),
      list: (tenantId) => Effect.sync(() => [...(servers.get(tenantId)?.values() ?? [])]),
      put: (tenantId, server) =>
        Effect.sync(() => {
          const m = servers.get(tenantId) ?? new Map<string, McpServer>()
          servers.set(tenantId, m.set(server.server_id, server))
        }),
      remove: (tenantId, serverId) => Effect.sync(() => servers.get(tenantId)?.delete(serverId) ?? false)
    })
    const of = (tenantId: TenantId) => {
      let m = custom.get(tenantId)
      if (!m) custom.set(tenantId, m = new Map())
      return m
    }
    return {
      ...mcp.methods,
      get: (tenantId, toolId) => {
        const tool = sharedById.get(toolId) ?? custom.get(tenantId)?.get(toolId)?.tool
        if (tool) return Effect.succeed(tool)
        return Effect.flatMap(
          mcp.get(tenantId, toolId),
          Option.match({ onNone: () => Effect.fail(new ToolNotFound({ tool_id: toolId })), onSome: Effect.succeed })
        )
      },
      list: (tenantId) =>
        Effect.map(mcp.list(tenantId), (imported) => [
          ...shared,
          ...[...(custom.get(tenantId)?.values() ?? [])].map((c) => c.tool),
          ...imported
        ]),
      put: (tenantId, definition) =>
        Effect.suspend(() => {
          if (sharedById.has(definition.tool_id) || mcpServerOfTool(definition.tool_id) !== undefined) {
            return Effect.fail(reserved(definition.tool_id))
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
      const mcpKey = (tenantId: TenantId) => `${prefix}:t:${tenantId}:mcp`
      const decodeServer = Schema.decodeUnknownSync(Schema.parseJson(McpServerSchema))
      const encodeServer = Schema.encodeSync(Schema.parseJson(McpServerSchema))
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
      const mcp = mcpPart({
        get: (tenantId, serverId) =>
          redis(() => client.hget(mcpKey(tenantId), serverId)).pipe(
            Effect.map((json) => Option.map(Option.fromNullable(json), decodeServer))
          ),
        list: (tenantId) =>
          redis(() => client.hvals(mcpKey(tenantId))).pipe(Effect.map((all) => all.map((json) => decodeServer(json)))),
        put: (tenantId, server) =>
          Effect.asVoid(redis(() => client.hset(mcpKey(tenantId), server.server_id, encodeServer(server)))),
        remove: (tenantId, serverId) =>
          redis(() => client.hdel(mcpKey(tenantId), serverId)).pipe(Effect.map((n) => n > 0))
      })
      return {
        ...mcp.methods,
        get: (tenantId, toolId) => {
          const builtin = sharedById.get(toolId)
          if (builtin) return Effect.succeed(builtin)
          if (mcpServerOfTool(toolId) !== undefined) {
            return Effect.flatMap(
              mcp.get(tenantId, toolId),
              Option.match({ onNone: () => Effect.fail(new ToolNotFound({ tool_id: toolId })), onSome: Effect.succeed })
            )
          }
          return redis(() => client.hget(key(tenantId), toolId)).pipe(
            Effect.flatMap((json) =>
              json === null
                ? Effect.fail(new ToolNotFound({ tool_id: toolId }))
                : Effect.sync(() => toolOf(tenantId, toolId, json))
            )
          )
        },
        list: (tenantId) =>
          Effect.zipWith(
            redis(() => client.hgetall(key(tenantId))),
            mcp.list(tenantId),
            (all, imported) => [
              ...shared,
              ...Object.entries(all).map(([id, json]) => toolOf(tenantId, id, json)),
              ...imported
            ]
          ),
        put: (tenantId, definition) =>
          Effect.gen(function*() {
            if (sharedById.has(definition.tool_id) || mcpServerOfTool(definition.tool_id) !== undefined) {
              return yield* reserved(definition.tool_id)
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
