import * as Schema from "effect/Schema"

const slug = (name: string, pattern: RegExp, description: string) =>
  Schema.String.pipe(
    Schema.pattern(pattern, { message: () => `${name} must match ${pattern.source} (${description})` })
  )

/** The tenant an object belongs to; only ever taken from a verified token. */
export const TenantId = slug("tenant_id", /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "letters, digits, _ and -").pipe(
  Schema.brand("TenantId")
)
export type TenantId = typeof TenantId.Type

/** The user (token `sub`) acting inside a tenant. */
export const UserId = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256), Schema.brand("UserId"))
export type UserId = typeof UserId.Type

/** A conversation with its own context; `.` is reserved because task ids embed the session id. */
export const SessionId = slug("session_id", /^[A-Za-z0-9_-]{1,128}$/, "letters, digits, _ and -").pipe(
  Schema.brand("SessionId")
)
export type SessionId = typeof SessionId.Type

/** `<session id>.<suffix>`: the session part routes the task to its `AgentSession` without a lookup. */
export const TaskId = slug("task_id", /^[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{1,64}$/, "<session_id>.<suffix>").pipe(
  Schema.brand("TaskId")
)
export type TaskId = typeof TaskId.Type

/** A tool id: built-ins are `vendor.action`, tenant tools are free-form slugs. */
export const ToolId = slug("tool_id", /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/, "lowercase words joined by . or _")
  .pipe(Schema.maxLength(128), Schema.brand("ToolId"))
export type ToolId = typeof ToolId.Type

/** The session a task id belongs to. */
export const sessionOfTask = (taskId: TaskId): SessionId => taskId.slice(0, taskId.lastIndexOf(".")) as SessionId

/** Entity ids are `tenant/key`; ids never contain `/`, so the tenant prefix cannot be forged. */
export const entityId = (tenantId: TenantId, key: string): string => `${tenantId}/${key}`

export const parseEntityId = (id: string): { readonly tenantId: TenantId; readonly key: string } => {
  const i = id.indexOf("/")
  return { tenantId: id.slice(0, i) as TenantId, key: id.slice(i + 1) }
}
