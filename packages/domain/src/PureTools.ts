import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { TenantId } from "./Ids.js"
import type { ToolSpec } from "./ToolDefinition.js"
import type { ToolFailed, ToolInputInvalid, ToolResult } from "./ToolWorker.js"

/**
 * The tools whose output is computed from their input alone (no credential, network or model): the pure built-ins
 * (`text.template`, `json.extract`, `datetime.parse`, `email.parse`). The tool service provides them, and a session
 * runs their calls in its own process: the tenant's `Connection` and a tool worker have nothing to add to such a
 * call but two cluster hops (two network hops in a deployment).
 */
export class PureTools extends Context.Tag("@altan/domain/PureTools")<PureTools, {
  /**
   * The run of the pure tool `spec` describes, its input checked against its schema and its output encoded as a tool
   * worker would; undefined for a tool whose calls go through the tenant's connection.
   */
  readonly of: (
    spec: ToolSpec
  ) => ((tenantId: TenantId, input: unknown) => Effect.Effect<ToolResult, ToolInputInvalid | ToolFailed>) | undefined
}>() {}
