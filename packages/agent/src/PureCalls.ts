import type { AuditLog } from "@altan/audit/AuditLog"
import { AuditLog as Audit } from "@altan/audit/AuditLog"
import type { TaskId, TenantId } from "@altan/domain/Ids"
import { callMetrics } from "@altan/domain/Metrics"
import type { PureTools } from "@altan/domain/PureTools"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import type { ToolFailed, ToolInputInvalid, ToolResult } from "@altan/domain/ToolWorker"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"

/**
 * The calls of a tenant's pure built-in tools (see `PureTools`), run in the session's own process. Each call is audited (`tool.invoke`, provider
 * `utility`) and counted in the call metrics as one through a connection is; it does not count against the
 * `tool_calls` budget, which meters calls that reach a provider or a tool runner.
 */
export const pureCalls = (pureTools: PureTools["Type"], audit: AuditLog["Type"], tenantId: TenantId) => {
  const metrics = callMetrics(tenantId, "utility")
  return (spec: ToolSpec) => {
    const run = pureTools.of(spec)
    if (run === undefined) return undefined
    return (input: unknown, taskId: TaskId, stepId: string): Effect.Effect<ToolResult, ToolInputInvalid | ToolFailed> =>
      run(tenantId, input).pipe(
        Effect.tap(() => metrics.call("ok")),
        Effect.tapError(() => metrics.call("failed")),
        Audit.timed(audit, (exit, latency_ms) => {
          const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          return {
            tenant_id: tenantId,
            action: "tool.invoke",
            target: `tool:${spec.tool_id}`,
            outcome: Exit.isSuccess(exit) ? "ok" : "failed",
            latency_ms,
            details: {
              provider: spec.provider,
              task_id: taskId,
              step_id: stepId,
              ...(Option.isSome(error) ? { error: error.value.code } : {})
            }
          }
        }),
        Effect.withSpan("PureCalls.run", {
          attributes: { "altan.tenant_id": tenantId, "altan.tool_id": spec.tool_id, "altan.task_id": taskId },
          captureStackTrace: false
        })
      )
  }
}
