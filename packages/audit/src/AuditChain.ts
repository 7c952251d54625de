/**
 * The hash chain of the audit records. The records of one tenant written by one process form a chain,
 * `<tenant_id>/<processId>` (a random process id drawn when the audit log is built, so runners never interleave
 * a chain). `seq` counts from 1, `prev_hash` is the previous record's `hash` (`genesisHash` for the first), and
 * `hash` is the SHA-256 (hex) of the record without `hash` in canonical JSON (`canonicalJson`: RFC 8785 for JSON
 * data, keys sorted by UTF-16 code units, no whitespace). `Verify.verify` (and `npm run audit:verify`) recomputes
 * it: an altered, deleted, reordered or inserted record breaks the chain; a record a sink could not write shows
 * up as a missing seq. Removing the newest records of a chain is not detectable from the chain alone: compare
 * the last hashes `verify` reports with an earlier run.
 */
import { canonicalJson } from "@altan/domain/Json"
import { createHash } from "node:crypto"

/** The `prev_hash` of the first record of a chain. */
export const genesisHash = "0".repeat(64)

/** Deterministic JSON (RFC 8785 for JSON data), which the record hashes are computed over. */
export { canonicalJson }

const sha256Hex = (text: string) => createHash("sha256").update(text, "utf8").digest("hex")

/** The `hash` a record must carry: SHA-256 hex of its canonical JSON without the `hash` field. */
export const recordHash = (record: object): string => {
  const { hash: _hash, ...rest } = record as Record<string, unknown>
  return sha256Hex(canonicalJson(rest))
}

/** Where a record goes in its chain: the fields it gets before it is hashed. */
export interface Link {
  readonly chain: string
  readonly seq: number
  readonly prev_hash: string
}

/** The chains of one writer, by tenant. */
export interface Chains {
  /**
   * The next record of `tenantId`'s chain: `build` makes it from its `Link` (spread last, as the records have
   * it), and it comes back with its `hash`. Synchronous, so two appends never fork a chain.
   */
  readonly append: <A extends Link>(tenantId: string, build: (link: Link) => A) => A & { readonly hash: string }
}

interface ChainState {
  readonly name: string
  seq: number
  last: string
}

/** The chains written by the process `processId`, each starting at seq 1 from `genesisHash`. */
export const makeChains = (processId: string): Chains => {
  const chains = new Map<string, ChainState>()
  const chainOf = (tenantId: string) => {
    let chain = chains.get(tenantId)
    if (chain === undefined) {
      chain = { name: `${tenantId}/${processId}`, seq: 0, last: genesisHash }
      chains.set(tenantId, chain)
    }
    return chain
  }
  return {
    append: (tenantId, build) => {
      const chain = chainOf(tenantId)
      // built in one literal: copying a finished record to add the link costs as much as hashing it
      const unhashed = build({ chain: chain.name, seq: chain.seq + 1, prev_hash: chain.last })
      const record = { ...unhashed, hash: sha256Hex(canonicalJson(unhashed)) }
      chain.seq = record.seq
      chain.last = record.hash
      return record
    }
  }
}
