import type { TenantId } from "@altan/domain/Ids"
import { PureTools } from "@altan/domain/PureTools"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import type { ToolFailed, ToolInputInvalid, ToolResult } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DatetimeParse } from "./builtin/Datetime.js"
import { EmailParse } from "./builtin/Email.js"
import { JsonExtract } from "./builtin/Json.js"
import { TextTemplate } from "./builtin/Text.js"
import * as Tool from "./Tool.js"

/** The built-in tools whose output is computed from their input alone (see `PureTools` in the domain). */
export const pureTools: ReadonlyMap<string, Tool.Tool> = new Map(
  [TextTemplate, JsonExtract, DatetimeParse, EmailParse].map((tool) => [tool.spec.tool_id, tool])
)

/** The pure tool a spec describes, when it is one as built in (a spec with a fallback goes through its connection). */
export const pureToolOf = (spec: ToolSpec): Tool.Tool | undefined => {
  if (spec.builtin !== true || spec.fallback !== undefined) return undefined
  const tool = pureTools.get(spec.tool_id)
  return tool !== undefined && tool.spec.provider === spec.provider ? tool : undefined
}

/**
 * Runs a pure tool as a tool worker would: its input checked against its schema, its output encoded, and a bug in it
 * (a defect) a failure of the call, not of the caller.
 */
export const runPure = (
  tool: Tool.Tool,
  tenantId: TenantId,
  input: unknown
): Effect.Effect<ToolResult, ToolInputInvalid | ToolFailed> => {
  const toolId = tool.spec.tool_id
  return tool.decode(input).pipe(
    Effect.flatMap((decoded) =>
      tool.run(decoded, {
        tenantId,
        // a pure tool reaching for the network or a model is a bug: a defect, failing the call
        http: () => Effect.dieMessage(`${toolId} is run as a pure tool and has no network`),
        baseUrl: () => undefined,
        complete: () => Effect.dieMessage(`${toolId} is run as a pure tool and has no model`)
      })
    ),
    Tool.failOnDefect(toolId),
    Effect.map((output): ToolResult => ({ output, cached: false }))
  )
}

/** The pure built-ins, for a session to run in its own process. */
export const layer: Layer.Layer<PureTools> = Layer.succeed(PureTools, {
  of: (spec) => {
    const tool = pureToolOf(spec)
    return tool === undefined ? undefined : (tenantId, input) => runPure(tool, tenantId, input)
  }
})
