/** How records look in Cloud Logging, whichever way they get there (stdout lines or the API). */
import type { AuditAction, AuditOutcome, AuditRecord } from "../AuditLog.js"

/** Cloud Logging severities of the records. */
export type AuditSeverity = "INFO" | "NOTICE" | "WARNING"

/**
 * `ok` is `INFO`, `failed` is `WARNING`. `denied` is `NOTICE`: a refusal is a control doing its job
 * (a bad token from a scanner, a tool the tenant may not use), significant for an audit but not a fault, so
 * an alert on `severity>=WARNING` stays about failures; select denials with `labels.outcome="denied"`.
 */
export const severityOf = (outcome: AuditOutcome): AuditSeverity =>
  outcome === "ok" ? "INFO" : outcome === "denied" ? "NOTICE" : "WARNING"

/** `tool.invoke tool:slack.post_message ok`. */
export const messageOf = (record: AuditRecord): string => `${record.action} ${record.target} ${record.outcome}`

/** The labels of a record in Cloud Logging: tenant, action and outcome, to filter and count on. */
export const labelsOf = (
  record: AuditRecord
): { readonly tenant_id: string; readonly action: AuditAction; readonly outcome: AuditOutcome } => ({
  tenant_id: record.tenant_id,
  action: record.action,
  outcome: record.outcome
})

/** `projects/<project>/traces/<trace_id>` when the project is known, else the bare trace id. */
export const traceOf = (traceId: string, projectId: string | undefined): string =>
  projectId === undefined ? traceId : `projects/${projectId}/traces/${traceId}`
