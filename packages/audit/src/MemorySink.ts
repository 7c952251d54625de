/** The memory sink: every record kept in process memory and readable through `AuditMemory`, for tests. */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { AuditLog, type AuditRecord, type AuditSink, make as makeAudit } from "./AuditLog.js"

/** The records of an in-memory audit log, in the order they were written. */
export class AuditMemory extends Context.Tag("@altan/audit/AuditMemory")<AuditMemory, {
  /** A copy of the records so far. */
  readonly records: () => ReadonlyArray<AuditRecord>
  readonly clear: () => void
}>() {}

/** Keeps every record in process memory: for tests. */
export const make = (): AuditSink & AuditMemory["Type"] => {
  const records: Array<AuditRecord> = []
  return {
    name: "memory",
    write: (record) => void records.push(record),
    records: () => records.slice(),
    clear: () => void records.splice(0)
  }
}

/** An audit log in memory, and its records: for tests. */
export const layer: Layer.Layer<AuditLog | AuditMemory> = Layer.effectContext(Effect.gen(function*() {
  const memory = make()
  const service = yield* makeAudit(memory)
  return Context.make(AuditLog, service).pipe(
    Context.add(AuditMemory, AuditMemory.of({ records: memory.records, clear: memory.clear }))
  )
}))
