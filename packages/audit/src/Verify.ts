/**
 * Verification of exported audit records: every chain's seqs continuous, each `prev_hash` the previous
 * record's `hash`, each `hash` its record's (`AuditChain`). Reads raw records, stdout sink lines and Cloud
 * Logging exports; `npm run audit:verify` runs it on a file.
 */
import * as Schema from "effect/Schema"
import { canonicalJson, genesisHash, recordHash } from "./AuditChain.js"
import { AuditRecord } from "./AuditLog.js"

/** Why a chain is broken at a record. `missing seq N`: record N is absent (deleted, or lost by a sink). */
export type BreakReason =
  | "hash mismatch"
  | "prev_hash mismatch"
  | "malformed record"
  | "duplicate seq"
  | `missing seq ${number}`

/** The first broken link of a chain. */
export interface ChainBreak {
  /** The chain; `(unknown)` for a malformed record that names none. */
  readonly chain: string
  /** The seq of the offending record (of the missing one for `missing seq N`), when it has one. */
  readonly seq: number | undefined
  readonly reason: BreakReason
  /** Position of the offending item in the input (0-based), absent for `missing seq N`. */
  readonly index: number | undefined
}

/** What `verify` found in a chain. */
export interface ChainSummary {
  readonly chain: string
  /** Well-formed, distinct records. */
  readonly records: number
  readonly firstSeq: number | undefined
  readonly lastSeq: number | undefined
  /** The newest hash: compare it with a later run to notice records removed from the end. */
  readonly lastHash: string | undefined
  readonly ok: boolean
}

export interface VerifyResult {
  readonly ok: boolean
  /** Audit items read, well-formed or not. */
  readonly records: number
  /**
   * Items that are no audit record at all, skipped: a log line interleaved with the stdout sink's records (plain
   * text, or JSON with none of `chain`, `seq`, `hash`). A record replaced by such a line still breaks its chain
   * (`missing seq N`, or `prev_hash mismatch` after it).
   */
  readonly skipped: number
  readonly chains: ReadonlyArray<ChainSummary>
  /** The first broken link of each broken chain; empty when `ok`. */
  readonly breaks: ReadonlyArray<ChainBreak>
}

export interface VerifyOptions {
  /**
   * Chains may start at any seq (an export of a time window, or after retention dropped older entries); the
   * first record's `prev_hash` is then taken on trust. By default a chain must start at seq 1.
   */
  readonly partial?: boolean
}

const unknownChain = "(unknown)"
const hex64 = /^[0-9a-f]{64}$/
const isAuditRecord = Schema.is(AuditRecord)

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * The audit record in an item: the item itself, the `audit` of a stdout line, or the `jsonPayload` of a Cloud
 * Logging export (`jsonPayload.audit` for exported stdout lines).
 */
export const recordOf = (value: unknown): unknown => {
  if (!isObject(value)) return value
  if (isObject(value.audit)) return value.audit
  if (isObject(value.jsonPayload)) return recordOf(value.jsonPayload)
  return value
}

interface Item {
  readonly index: number
  readonly seq: number | undefined
  /** `undefined` when malformed. */
  readonly record: AuditRecord | undefined
}

const wellFormed = (value: unknown): value is AuditRecord =>
  isAuditRecord(value) && value.seq >= 1 && hex64.test(value.hash) && hex64.test(value.prev_hash)

/** Whether an item claims to be an audit record (well-formed or not): an object with a chain, seq or hash. */
const auditShaped = (value: unknown) =>
  isObject(value) && ("chain" in value || "seq" in value || "hash" in value || "prev_hash" in value)

/**
 * Checks every chain in `records` (any order; raw records, stdout lines or Cloud Logging entries): seqs
 * continuous from 1, each `prev_hash` equal to the previous record's `hash`, each `hash` that of its record.
 * Reports the first broken link of each chain; identical duplicates (an entry delivered twice) are ignored, and so
 * are items that are no audit record at all (log lines beside the stdout sink's records), which are counted.
 */
export const verify = (records: Iterable<unknown>, options: VerifyOptions = {}): VerifyResult => {
  const chains = new Map<string, Array<Item>>()
  let count = 0
  let position = 0
  let skipped = 0
  for (const value of records) {
    const index = position++
    const candidate = recordOf(value)
    if (!auditShaped(candidate)) {
      skipped++
      continue
    }
    count++
    const item: Item = wellFormed(candidate)
      ? { index, seq: candidate.seq, record: candidate }
      : {
        index,
        seq: isObject(candidate) && typeof candidate.seq === "number" ? candidate.seq : undefined,
        record: undefined
      }
    const chain = item.record?.chain ??
      (isObject(candidate) && typeof candidate.chain === "string" ? candidate.chain : unknownChain)
    const items = chains.get(chain)
    if (items) items.push(item)
    else chains.set(chain, [item])
  }

  const summaries: Array<ChainSummary> = []
  const breaks: Array<ChainBreak> = []
  for (const chain of [...chains.keys()].sort()) {
    const items = chains.get(chain)!.sort((a, b) => (a.seq ?? -Infinity) - (b.seq ?? -Infinity) || a.index - b.index)
    const broken = walk(chain, items, options.partial === true)
    const distinct = new Map<number, AuditRecord>()
    for (const item of items) {
      if (item.record && !distinct.has(item.record.seq)) distinct.set(item.record.seq, item.record)
    }
    const seqs = [...distinct.keys()]
    const last = seqs.length === 0 ? undefined : distinct.get(seqs[seqs.length - 1]!)
    summaries.push({
      chain,
      records: distinct.size,
      firstSeq: seqs[0],
      lastSeq: last?.seq,
      lastHash: last?.hash,
      ok: broken === undefined
    })
    if (broken) breaks.push(broken)
  }
  return { ok: breaks.length === 0, records: count, skipped, chains: summaries, breaks }
}

/** The first broken link of one chain's items, sorted by seq. */
const walk = (chain: string, items: ReadonlyArray<Item>, partial: boolean): ChainBreak | undefined => {
  const at = (item: Item, reason: BreakReason): ChainBreak => ({ chain, seq: item.seq, reason, index: item.index })
  let expected = partial && items[0]?.seq !== undefined ? items[0].seq : 1
  let previous: AuditRecord | undefined
  for (const item of items) {
    if (previous && item.seq === previous.seq) {
      if (item.record && canonicalJson(item.record) === canonicalJson(previous)) continue
      return at(item, item.record ? "duplicate seq" : "malformed record")
    }
    if (item.seq !== undefined && Number.isInteger(item.seq) && item.seq > expected) {
      return { chain, seq: expected, reason: `missing seq ${expected}`, index: undefined }
    }
    const record = item.record
    if (record === undefined) return at(item, "malformed record")
    if (recordHash(record) !== record.hash) return at(item, "hash mismatch")
    const prevHash = previous?.hash ?? (record.seq === 1 ? genesisHash : undefined)
    if (prevHash !== undefined && record.prev_hash !== prevHash) return at(item, "prev_hash mismatch")
    previous = record
    expected = record.seq + 1
  }
  return undefined
}

/** One item of an audit export, and where it was (`line 7`, `entry 3`). */
export interface ExportItem {
  readonly where: string
  readonly value: unknown
}

/**
 * The items of an audit export: JSON lines (raw records, stdout sink lines or Cloud Logging entries; a line
 * that is not JSON is kept as a string, which `verify` skips as no record), or a JSON array of entries as
 * `gcloud logging read --format=json` prints them.
 */
export const parseExport = (text: string): Array<ExportItem> => {
  const trimmed = text.trim()
  if (trimmed.startsWith("[")) {
    try {
      const array: unknown = JSON.parse(trimmed)
      if (Array.isArray(array)) return array.map((value, i) => ({ where: `entry ${i + 1}`, value }))
    } catch {
      // not one JSON array: read it as lines
    }
  }
  const items: Array<ExportItem> = []
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (line.trim() === "") continue
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      value = line
    }
    items.push({ where: `line ${i + 1}`, value })
  }
  return items
}

/** A human summary of `verify`'s result; `where` names an input position (`line 7`). */
export const formatReport = (
  result: VerifyResult,
  where: (index: number) => string = (i) => `item ${i + 1}`
): string => {
  const broken = result.breaks.length
  const lines = [
    `${result.records} records in ${result.chains.length} chain${result.chains.length === 1 ? "" : "s"}${
      result.skipped > 0 ? ` (${result.skipped} other line${result.skipped === 1 ? "" : "s"} skipped)` : ""
    }: ${broken === 0 ? "all chains verify" : `${broken} broken chain${broken === 1 ? "" : "s"}`}`
  ]
  const breakOf = new Map(result.breaks.map((b) => [b.chain, b]))
  for (const chain of result.chains) {
    const found = breakOf.get(chain.chain)
    if (found) {
      lines.push(
        `BROKEN ${found.chain} at seq ${found.seq ?? "?"}: ${found.reason}${
          found.index === undefined ? "" : ` (${where(found.index)})`
        }`
      )
    } else {
      lines.push(
        `ok     ${chain.chain} seq ${chain.firstSeq}..${chain.lastSeq} (${chain.records}) last ${chain.lastHash}`
      )
    }
  }
  return lines.join("\n")
}
