/**
 * The stdout sink: one Cloud Logging structured JSON line per record, for Cloud Logging's agent (GKE ships
 * container stdout) or any log collector. The default sink (`AUDIT_SINK=stdout`).
 */
import { errorMessage } from "@altan/domain/Errors"
import type * as Layer from "effect/Layer"
import { type AuditLog, type AuditRecord, type AuditSink, AuditSinkError, layer as layerAudit } from "./AuditLog.js"
import { labelsOf, messageOf, severityOf, traceOf } from "./internal/cloudLogging.js"

/**
 * A record as one line of Cloud Logging structured logging (https://cloud.google.com/logging/docs/structured-logging):
 * `severity`, `message`, `time`, `logging.googleapis.com/labels`, `logging.googleapis.com/trace` (when the record
 * has a trace) and the whole record under `audit`, which the logging agent keeps as `jsonPayload.audit`.
 */
export const structuredLogLine = (record: AuditRecord, projectId?: string): Record<string, unknown> => ({
  severity: severityOf(record.outcome),
  message: messageOf(record),
  time: record.time,
  "logging.googleapis.com/labels": labelsOf(record),
  ...(record.trace_id === undefined ? {} : { "logging.googleapis.com/trace": traceOf(record.trace_id, projectId) }),
  audit: record
})

/** Options of `make`. */
export interface Options {
  /** The Google Cloud project, to write traces as `projects/<project>/traces/<id>`. */
  readonly projectId?: string | undefined
  /** Where lines go; `process.stdout.write` by default. */
  readonly write?: (line: string) => void
}

/**
 * One JSON line per record on stdout (`structuredLogLine`), written directly with one `process.stdout.write`
 * per line rather than through the Effect logger, so `LOG_LEVEL` and `LOG_FORMAT` never hide or reshape them.
 */
export const make = (options: Options = {}): AuditSink => ({
  name: "stdout",
  write: (record) => {
    try {
      const line = `${JSON.stringify(structuredLogLine(record, options.projectId))}\n`
      if (options.write) options.write(line)
      else process.stdout.write(line)
    } catch (cause) {
      throw new AuditSinkError({
        message: `stdout: cannot write ${record.chain} #${record.seq}: ${errorMessage(cause)}`
      })
    }
  }
})

/** The `AuditLog` writing to stdout. */
export const layer = (options?: Options): Layer.Layer<AuditLog> => layerAudit(make(options))
