import type * as Envelope from "@effect/cluster/Envelope"
import type * as Reply from "@effect/cluster/Reply"
import type * as Option from "effect/Option"

/** A stored message, queued in its shard while unprocessed. */
export interface Stored {
  /** Save order, across shards. */
  readonly seq: number
  readonly shard: string
  readonly envelope: Envelope.Envelope.Encoded
}

/** A request: unprocessed until it has an exit reply. */
export interface StoredRequest extends Stored {
  readonly envelope: Envelope.Request.Encoded
  readonly primaryKey: string | null
  readonly deliverAt: number | null
  replies: Array<Reply.ReplyEncoded<any>>
  lastReceivedChunk: Option.Option<Reply.ChunkEncoded<any>>
  /** Ids of replies dropped by `clearReplies`: still refused as duplicates until the request is forgotten. */
  cleared: Array<string> | undefined
  queued: boolean
  /** When a read last answered it (the storage clock), if reads skip what they answered lately. */
  readAt: number | undefined
  /** When its exit was saved (the storage clock); retention counts from here. */
  processedAt: number
}

export const isRequest = (stored: Stored): stored is StoredRequest => stored.envelope._tag === "Request"

/** One shard's unprocessed messages in save order. */
export class ShardQueue {
  private items = new Map<number, Stored>()
  private last = -1
  /** The read that last visited this queue, so a shard asked twice in one read is read once. */
  readBy = 0

  get size() {
    return this.items.size
  }

  /** The oldest message queued. */
  first(): Stored | undefined {
    return this.items.values().next().value
  }

  add(stored: Stored) {
    if (stored.seq > this.last) {
      this.items.set(stored.seq, stored)
      this.last = stored.seq
      return
    }
    // a request made unprocessed again by `clearReplies` goes back to its place (rare: rebuild the order)
    const all = [...this.items.values(), stored].sort((a, b) => a.seq - b.seq)
    this.items = new Map(all.map((s) => [s.seq, s]))
  }

  delete(stored: Stored) {
    this.items.delete(stored.seq)
  }

  values() {
    return this.items.values()
  }
}

export const shardKey = (shardId: { readonly group: string; readonly id: number }) => `${shardId.group}:${shardId.id}`

export const bySeq = (a: Stored, b: Stored) => a.seq - b.seq
