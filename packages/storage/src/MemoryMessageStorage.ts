import type * as Envelope from "@effect/cluster/Envelope"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import type * as Reply from "@effect/cluster/Reply"
import * as ShardId from "@effect/cluster/ShardId"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as Snowflake from "@effect/cluster/Snowflake"
import * as Arr from "effect/Array"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as MutableHashSet from "effect/MutableHashSet"
import * as Option from "effect/Option"
import { bySeq, isRequest, shardKey, ShardQueue, type Stored, type StoredRequest } from "./internal/shardQueue.js"

/**
 * The cluster's message storage for one in-process runner (the embedded default), with the semantics of
 * `@effect/cluster`'s memory driver but indexed: unprocessed messages wait in a queue per shard, so a read
 * visits only the unprocessed messages of the shards it asks for, whatever has been processed before; and
 * processed requests sit in the order they finished, so retention removes them in time proportional to what
 * it removes. The library's driver scans its whole journal, processed messages included, on every read.
 *
 * Differences from the library's driver: `clearAddress` forgets the address's primary keys and pending
 * AckChunk/Interrupt envelopes too, as the SQL storage does (the library leaves primary keys that answer
 * `Duplicate` for deleted requests); `unprocessedMessagesById` answers in save order. With `rereadAfterMs` (as the
 * runtime runs it), a request a read answered is skipped by later reads for that long, or until its address or
 * shard is reset or its replies cleared, as the SQL storage does with `last_read`: the runner reads storage on every
 * persisted message, and would otherwise decode every request still in flight again each time.
 */
export class MemoryMessageStorage extends Context.Tag("@altan/storage/MemoryMessageStorage")<
  MemoryMessageStorage,
  Store
>() {}

type Unprocessed = {
  readonly envelope: Envelope.Envelope.Encoded
  readonly lastSentReply: Option.Option<Reply.ReplyEncoded<any>>
}

const unprocessed = (stored: Stored): Unprocessed => ({
  envelope: stored.envelope,
  lastSentReply: isRequest(stored) ? Arr.last(stored.replies) : Option.none()
})

/** Options of a `Store`. */
export interface StoreOptions {
  /**
   * Copy envelopes and replies through JSON when saved, as the library's driver does to simulate a wire (on
   * with `simulateRemoteSerialization`, as in tests). Off, the storage holds what the cluster encoded: schema
   * encoding builds new structs, arrays and records, so only `Unknown`-typed values are shared with the sender
   * and the handler, which already share them with each other when the wire is not simulated; neither the
   * cluster nor our entities mutate those in place.
   */
  readonly copy: boolean
  /** The storage clock, in milliseconds: when a request became processed. */
  readonly now: () => number
  /**
   * How long reads skip a request a read answered (the SQL storage: 10 minutes). Unset, a request is answered by
   * every read until it is processed, as the library's memory driver does.
   */
  readonly rereadAfterMs?: number | undefined
}

/** How long the SQL storage leaves a message it read unread again (its `last_read`). */
export const sqlRereadAfterMs = 10 * 60_000

/** The storage's state: the driver the cluster calls, plus what retention and tests need. */
export class Store {
  private readonly requests = new Map<string, StoredRequest>()
  private readonly byPrimaryKey = new Map<string, StoredRequest>()
  private readonly replyIds = new Set<string>()
  private readonly shards = new Map<string, ShardQueue>()
  /** AckChunk and Interrupt envelopes not read yet, by request id (for `unprocessedMessagesById`). */
  private readonly signals = new Map<string, Array<Stored>>()
  /** Processed requests in the order they became processed, so their `processedAt` never decreases. */
  private readonly processed = new Map<string, StoredRequest>()
  private seq = 0
  private reads = 0
  private queued = 0
  private visits = 0

  constructor(private readonly options: StoreOptions) {}

  /** Requests held, processed or not. */
  get size() {
    return this.requests.size
  }

  /** Messages waiting to be read: unprocessed requests and unread AckChunk/Interrupt envelopes. */
  get unprocessedCount() {
    return this.queued
  }

  /** Stored messages visited by reads so far: grows with what is unprocessed, never with what was processed. */
  get visited() {
    return this.visits
  }

  /**
   * Forgets processed requests (with their replies and primary keys) whose exit was saved before `before`;
   * returns how many. Unprocessed requests stay, however old.
   */
  prune(before: number): number {
    let removed = 0
    for (const request of this.processed.values()) {
      if (request.processedAt >= before) break
      this.forget(request)
      removed++
    }
    return removed
  }

  /**
   * Of `shardIds`, those with messages waiting. The runner asks for every shard it holds (hundreds per shard group)
   * on every read, and reads on every persisted message: when it asks with its set of shards, only the shards that
   * have a queue are looked up in it.
   */
  queuedShards(shardIds: Iterable<ShardId.ShardId>): Iterable<ShardId.ShardId> {
    if (!isMutableHashSet(shardIds)) return shardIds
    const queued: Array<ShardId.ShardId> = []
    for (const queue of this.shards.values()) {
      const { group, id } = queue.first()!.envelope.address.shardId
      const shardId = ShardId.make(group, id)
      if (MutableHashSet.has(shardIds, shardId)) queued.push(shardId)
    }
    return queued
  }

  private copy<A>(value: A): A {
    return this.options.copy ? JSON.parse(JSON.stringify(value)) : value
  }

  private enqueue(stored: Stored) {
    let queue = this.shards.get(stored.shard)
    if (!queue) {
      queue = new ShardQueue()
      this.shards.set(stored.shard, queue)
    }
    queue.add(stored)
    this.queued++
    if (isRequest(stored)) {
      stored.queued = true
    } else {
      const pending = this.signals.get(stored.envelope.requestId)
      if (pending) pending.push(stored)
      else this.signals.set(stored.envelope.requestId, [stored])
    }
  }

  private dequeue(stored: Stored) {
    const queue = this.shards.get(stored.shard)!
    queue.delete(stored)
    this.queued--
    if (queue.size === 0) this.shards.delete(stored.shard)
    if (isRequest(stored)) {
      stored.queued = false
      return
    }
    const pending = this.signals.get(stored.envelope.requestId)!
    pending.splice(pending.indexOf(stored), 1)
    if (pending.length === 0) this.signals.delete(stored.envelope.requestId)
  }

  private markProcessed(request: StoredRequest) {
    if (request.queued) this.dequeue(request)
    if (!this.processed.has(request.envelope.requestId)) {
      request.processedAt = this.options.now()
      this.processed.set(request.envelope.requestId, request)
    }
  }

  private forget(request: StoredRequest) {
    const id = request.envelope.requestId
    if (request.queued) this.dequeue(request)
    this.processed.delete(id)
    this.requests.delete(id)
    if (request.primaryKey && this.byPrimaryKey.get(request.primaryKey) === request) {
      this.byPrimaryKey.delete(request.primaryKey)
    }
    for (const reply of request.replies) this.replyIds.delete(reply.id)
    for (const replyId of request.cleared ?? []) this.replyIds.delete(replyId)
  }

  /** Requests are returned until processed; AckChunk and Interrupt envelopes once. */
  private deliver(found: Array<Stored>, now: number, consume: boolean): Array<Unprocessed> {
    const messages: Array<Unprocessed> = []
    const reread = this.options.rereadAfterMs
    for (const stored of found) {
      if (isRequest(stored)) {
        if (stored.deliverAt && stored.deliverAt > now) continue
        if (consume && reread !== undefined) {
          if (stored.readAt !== undefined && now - stored.readAt < reread) continue
          stored.readAt = now
        }
      } else if (consume) {
        this.dequeue(stored)
      }
      messages.push(unprocessed(stored))
    }
    return messages
  }

  private repliesFor(requestIds: ReadonlyArray<string>) {
    const replies: Array<Reply.ReplyEncoded<any>> = []
    for (const requestId of requestIds) {
      const request = this.requests.get(requestId)
      if (!request) continue
      if (Option.isNone(request.lastReceivedChunk)) {
        for (const reply of request.replies) replies.push(reply)
        continue
      }
      const sequence = request.lastReceivedChunk.value.sequence
      for (const reply of request.replies) {
        if (reply._tag === "Chunk" && reply.sequence <= sequence) continue
        replies.push(reply)
      }
    }
    return replies
  }

  /** The driver `MessageStorage.makeEncoded` turns into the cluster's `MessageStorage`. */
  readonly encoded: MessageStorage.Encoded = {
    saveEnvelope: ({ deliverAt, envelope: original, primaryKey }) =>
      Effect.sync(() => {
        const existing = primaryKey
          ? this.byPrimaryKey.get(primaryKey)
          : original._tag === "Request"
          ? this.requests.get(original.requestId)
          : undefined
        if (existing) {
          return MessageStorage.SaveResultEncoded.Duplicate({
            originalId: Snowflake.Snowflake(existing.envelope.requestId),
            lastReceivedReply: existing.replies.length === 1 && existing.replies[0]!._tag === "WithExit"
              ? Option.some(existing.replies[0]!)
              : existing.lastReceivedChunk
          })
        }
        const envelope = this.copy(original)
        const stored = { seq: ++this.seq, shard: shardKey(envelope.address.shardId), envelope }
        if (envelope._tag === "Request") {
          const request: StoredRequest = {
            ...stored,
            envelope,
            primaryKey,
            deliverAt,
            replies: [],
            lastReceivedChunk: Option.none(),
            cleared: undefined,
            queued: false,
            readAt: undefined,
            processedAt: 0
          }
          this.requests.set(envelope.requestId, request)
          if (primaryKey) this.byPrimaryKey.set(primaryKey, request)
          this.enqueue(request)
        } else {
          if (envelope._tag === "AckChunk") {
            const request = this.requests.get(envelope.requestId)
            if (request) {
              request.lastReceivedChunk = Arr.findFirst(
                request.replies,
                (r): r is Reply.ChunkEncoded<any> => r._tag === "Chunk" && r.id === envelope.replyId
              ).pipe(Option.orElse(() => request.lastReceivedChunk))
            }
          }
          this.enqueue(stored)
        }
        return MessageStorage.SaveResultEncoded.Success()
      }),

    saveReply: (original) =>
      Effect.sync(() => {
        const reply = this.copy(original)
        const request = this.requests.get(reply.requestId)
        if (!request || this.replyIds.has(reply.id)) return
        if (reply._tag === "WithExit") this.markProcessed(request)
        request.replies.push(reply)
        this.replyIds.add(reply.id)
      }),

    clearReplies: (requestId) =>
      Effect.sync(() => {
        const request = this.requests.get(String(requestId))
        if (!request) return
        if (request.replies.length > 0) {
          request.cleared = [...(request.cleared ?? []), ...request.replies.map((r) => r.id)]
        }
        request.replies = []
        request.lastReceivedChunk = Option.none()
        request.readAt = undefined
        this.processed.delete(request.envelope.requestId)
        if (!request.queued) this.enqueue(request)
      }),

    requestIdForPrimaryKey: (primaryKey) =>
      Effect.sync(() =>
        Option.fromNullable(this.byPrimaryKey.get(primaryKey)?.envelope.requestId).pipe(
          Option.map(Snowflake.Snowflake)
        )
      ),

    repliesFor: (requestIds) => Effect.sync(() => this.repliesFor(requestIds)),

    repliesForUnfiltered: (requestIds) =>
      Effect.sync(() => requestIds.flatMap((id) => this.requests.get(String(id))?.replies ?? [])),

    unprocessedMessages: (shardIds, now) =>
      Effect.sync(() => {
        const read = ++this.reads
        const found: Array<Stored> = []
        let queues = 0
        for (const shardId of shardIds) {
          const queue = this.shards.get(shardId)
          if (!queue || queue.readBy === read) continue
          queue.readBy = read
          queues++
          for (const stored of queue.values()) {
            this.visits++
            found.push(stored)
          }
        }
        // the library answers in save order across shards
        if (queues > 1) found.sort(bySeq)
        return this.deliver(found, now, true)
      }),

    unprocessedMessagesById: (ids, now) =>
      Effect.sync(() => {
        const found = new Set<Stored>()
        for (const id of ids) {
          const key = String(id)
          const request = this.requests.get(key)
          if (request?.queued) found.add(request)
          for (const signal of this.signals.get(key) ?? []) found.add(signal)
        }
        this.visits += found.size
        return this.deliver([...found].sort(bySeq), now, false)
      }),

    resetAddress: (address) =>
      Effect.sync(() => {
        for (const stored of this.shards.get(shardKey(address.shardId))?.values() ?? []) {
          if (
            isRequest(stored) && stored.envelope.address.entityType === address.entityType &&
            stored.envelope.address.entityId === address.entityId
          ) stored.readAt = undefined
        }
      }),

    // Rare (the workflow engine's clock): a scan of the requests held is fine here, unlike in reads.
    clearAddress: (address) =>
      Effect.sync(() => {
        const sameAddress = (stored: Stored) =>
          stored.envelope.address.entityType === address.entityType &&
          stored.envelope.address.entityId === address.entityId
        for (const request of this.requests.values()) {
          if (sameAddress(request)) this.forget(request)
        }
        const queue = this.shards.get(address.shardId.toString())
        for (const stored of queue?.values() ?? []) {
          if (sameAddress(stored)) this.dequeue(stored)
        }
      }),

    resetShards: (shardIds) =>
      Effect.sync(() => {
        for (const shardId of shardIds) {
          for (const stored of this.shards.get(shardId)?.values() ?? []) {
            if (isRequest(stored)) stored.readAt = undefined
          }
        }
      })
  }
}

const mutableHashSetTypeId = Symbol.for("effect/MutableHashSet")
const isMutableHashSet = (u: unknown): u is MutableHashSet.MutableHashSet<ShardId.ShardId> =>
  typeof u === "object" && u !== null && mutableHashSetTypeId in u

/** The store and the cluster's `MessageStorage` over it; copies through JSON when the runner simulates a wire. */
export const make: Effect.Effect<
  { readonly store: Store; readonly storage: MessageStorage.MessageStorage["Type"] },
  never,
  ShardingConfig.ShardingConfig | Snowflake.Generator
> = Effect.gen(function*() {
  const config = yield* ShardingConfig.ShardingConfig
  const clock = yield* Effect.clock
  const store = new Store({
    copy: config.simulateRemoteSerialization,
    now: () => clock.unsafeCurrentTimeMillis(),
    rereadAfterMs: sqlRereadAfterMs
  })
  const storage = yield* MessageStorage.makeEncoded(store.encoded)
  return {
    store,
    storage: MessageStorage.MessageStorage.of({
      ...storage,
      unprocessedMessages: (shardIds) => storage.unprocessedMessages(store.queuedShards(shardIds))
    })
  }
})

/** The cluster's `MessageStorage` in process memory, with its `MemoryMessageStorage` handle for retention. */
export const layer: Layer.Layer<
  MessageStorage.MessageStorage | MemoryMessageStorage,
  never,
  ShardingConfig.ShardingConfig
> = Layer.effectContext(Effect.gen(function*() {
  const { storage, store } = yield* make
  return Context.make(MessageStorage.MessageStorage, storage).pipe(Context.add(MemoryMessageStorage, store))
})).pipe(Layer.provide(Snowflake.layerGenerator))

/** Forgets processed requests whose exit was saved before `before` (epoch ms); returns how many. */
export const prune = (store: Store, before: number): number => store.prune(before)
