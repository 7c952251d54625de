import type { TenantId } from "@altan/domain/Ids"
import type { ToolFailed, ToolInputInvalid } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import type { Tool, ToolContext } from "../src/Tool.js"

// utility tools never go out: a call through this client is a bug the test must see
const ctx: ToolContext = {
  tenantId: "t1" as TenantId,
  http: () => Effect.die(new Error("a utility tool made an HTTP call")),
  baseUrl: () => undefined,
  complete: () => Effect.die(new Error("this tool asked for an LLM"))
}

/** Decodes then runs, as the tool service does. */
export const call = (tool: Tool, input: unknown): Effect.Effect<any, ToolInputInvalid | ToolFailed> =>
  Effect.flatMap(tool.decode(input), (decoded) => tool.run(decoded, ctx))

/** The failure of a call, which must fail. */
export const failure = (tool: Tool, input: unknown) => Effect.flip(call(tool, input))

/** The decode failure of an input, which must be rejected. */
export const decodeFailure = (tool: Tool, input: unknown) => Effect.flip(tool.decode(input))
