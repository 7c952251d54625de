import type { TenantId } from "@altan/domain/Ids"

/**
 * The Redis Cluster hash tag of a session: every key of a session (state, task index, event logs) carries it,
 * so the keys of one session live in one slot and a `MULTI` over them stays valid on a cluster.
 */
export const sessionTag = (tenantId: TenantId, sessionId: string): string => `{${tenantId}/${sessionId}}`

/** The Redis stream of a task's events (see `EventLog.layerRedis`); in its session's slot, beside the task's record. */
export const eventLogKey = (prefix: string, tenantId: TenantId, sessionId: string, taskId: string): string =>
  `${prefix}:t:${tenantId}:ev:${sessionTag(tenantId, sessionId)}:${taskId}`
