import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { type AuditEntry, AuditLog, type AuditRecord } from "../src/AuditLog.js"
import * as MemorySink from "../src/MemorySink.js"

/** The `i`th entry of a tenant: a tool call, every third one failed. */
export const entry = (tenant: string, i: number, overrides: Partial<AuditEntry> = {}): AuditEntry => ({
  tenant_id: tenant,
  user: `user-${i}`,
  action: "tool.invoke",
  target: `tool:slack.post_message`,
  outcome: i % 3 === 0 ? "failed" : "ok",
  latency_ms: 10 + i / 4,
  details: { step: `s${i}`, status: 200 },
  ...overrides
})

export const record = (e: AuditEntry) => Effect.flatMap(AuditLog, (log) => log.record(e))
export const records = Effect.map(MemorySink.AuditMemory, (memory) => memory.records())

/** Runs `effect` with a logger that collects `LEVEL message` lines instead of printing them. */
export const collectingLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const messages: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) =>
      void messages.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    )
    const result = yield* Effect.provide(effect, Logger.replace(Logger.defaultLogger, logger))
    return [result, messages] as const
  })

/** The records of one chain, in the order written. */
export const chainOf = (all: ReadonlyArray<AuditRecord>, chain: string) => all.filter((r) => r.chain === chain)

/** Three tenants, one writer, 8 records each, written concurrently. */
export const written = Effect.gen(function*() {
  yield* Effect.forEach(
    ["acme", "globex", "initech"].flatMap((tenant) => Array.from({ length: 8 }, (_, i) => entry(tenant, i + 1))),
    record,
    { concurrency: "unbounded", discard: true }
  )
  return yield* records
}).pipe(Effect.provide(MemorySink.layer))
