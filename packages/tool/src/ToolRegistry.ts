import type { TenantId } from "@altan/domain/Ids"
import { ToolNotFound } from "@altan/domain/ToolWorker"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DatetimeParse } from "./builtin/Datetime.js"
import { EmailParse } from "./builtin/Email.js"
import { JsonExtract } from "./builtin/Json.js"
import { TextTemplate } from "./builtin/Text.js"
import type { Tool } from "./Tool.js"

/** The tools available to a tenant: the built-ins plus the tenant's own. */
export class ToolRegistry extends Context.Tag("@altan/tool/ToolRegistry")<ToolRegistry, {
  readonly get: (tenantId: TenantId, toolId: string) => Effect.Effect<Tool, ToolNotFound>
  readonly list: (tenantId: TenantId) => Effect.Effect<ReadonlyArray<Tool>>
}>() {}

/** The built-in utility tools, available to every tenant. */
export const builtins: ReadonlyArray<Tool> = [EmailParse, JsonExtract, TextTemplate, DatetimeParse]

/**
 * A registry held in memory. `extra` adds process-wide tools beside the built-ins (tests use it
 * to register probe tools).
 */
export const layerMemory = (
  options?: { readonly extra?: ReadonlyArray<Tool> | undefined }
): Layer.Layer<ToolRegistry> =>
  Layer.sync(ToolRegistry, () => {
    const all = [...builtins, ...(options?.extra ?? [])]
    const byId = new Map(all.map((t) => [t.spec.tool_id as string, t]))
    return {
      get: (_tenantId, toolId) => {
        const tool = byId.get(toolId)
        return tool ? Effect.succeed(tool) : Effect.fail(new ToolNotFound({ tool_id: toolId }))
      },
      list: () => Effect.succeed(all)
    }
  })
