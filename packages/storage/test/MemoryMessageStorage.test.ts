import * as EntityAddress from "@effect/cluster/EntityAddress"
import * as EntityId from "@effect/cluster/EntityId"
import * as EntityType from "@effect/cluster/EntityType"
import type * as Envelope from "@effect/cluster/Envelope"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import type * as Reply from "@effect/cluster/Reply"
import * as ShardId from "@effect/cluster/ShardId"
import * as Snowflake from "@effect/cluster/Snowflake"
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as MutableHashSet from "effect/MutableHashSet"
import * as Option from "effect/Option"
import { Store } from "../src/MemoryMessageStorage.js"

// --- encoded messages, as the cluster hands them to a driver ---

let nextId = 1_000_000
const newId = () => String(nextId++)
const addressOf = (shard: number, entityId = `e${shard}`) => ({
  shardId: { group: "g", id: shard },
  entityType: "E",
  entityId
})
const shard = (id: number) => `g:${id}`

type RequestEncoded = Envelope.Request.Encoded
const request = (shardNo: number, entityId?: string): RequestEncoded => ({
  _tag: "Request",
  requestId: newId(),
  address: addressOf(shardNo, entityId),
  tag: "Do",
  payload: { n: nextId, nested: { list: [1, 2] } },
  headers: {}
})
const exit = (req: RequestEncoded, value: unknown = "done"): Reply.ReplyEncoded<any> => ({
  _tag: "WithExit",
  id: newId(),
  requestId: req.requestId,
  exit: { _tag: "Success", value } as any
})
const chunk = (req: RequestEncoded, sequence: number): Reply.ReplyEncoded<any> => ({
  _tag: "Chunk",
  id: newId(),
  requestId: req.requestId,
  sequence,
  values: [sequence]
})
const ack = (req: RequestEncoded, replyId: string): Envelope.Envelope.Encoded => ({
  _tag: "AckChunk",
  id: newId(),
  address: req.address,
  requestId: req.requestId,
  replyId
})
const interrupt = (req: RequestEncoded): Envelope.Envelope.Encoded => ({
  _tag: "Interrupt",
  id: newId(),
  address: req.address,
  requestId: req.requestId
})

const save = (
  driver: MessageStorage.Encoded,
  envelope: Envelope.Envelope.Encoded,
  options: { primaryKey?: string; deliverAt?: number | null } = {}
) => driver.saveEnvelope({ envelope, primaryKey: options.primaryKey ?? null, deliverAt: options.deliverAt ?? null })

const read = (driver: MessageStorage.Encoded, shards: ReadonlyArray<number>, now = 0) =>
  driver.unprocessedMessages(shards.map(shard) as [string, ...Array<string>], now)

/** What a read answered, by kind and id. */
const names = (messages: ReadonlyArray<{ readonly envelope: Envelope.Envelope.Encoded }>) =>
  messages.map(({ envelope }) =>
    envelope._tag === "Request" ? `R${envelope.requestId}` : `${envelope._tag[0]}${envelope.requestId}`
  )

const makeStore = (now = () => 0) => new Store({ copy: true, now })

/** The library's memory driver, which ours must answer like; it reads `now` itself instead of the time it is given. */
const libraryDriver = (now: () => number = () => 0) =>
  MessageStorage.MemoryDriver.pipe(
    Effect.map((driver) => driver.encoded),
    Effect.provide(MessageStorage.MemoryDriver.Default),
    Effect.withClock(Object.assign(Object.create(Clock.make()) as Clock.Clock, { unsafeCurrentTimeMillis: now }))
  )

describe("MemoryMessageStorage", () => {
  it.effect("a duplicate primary key answers Duplicate with the only exit, else the last acknowledged chunk", () =>
    Effect.gen(function*() {
      const store = makeStore()
      const driver = store.encoded
      const first = request(1)
      expect(yield* save(driver, first, { primaryKey: "k1" })).toEqual(MessageStorage.SaveResultEncoded.Success())
      const again = { ...request(1), requestId: newId() }
      const duplicate = yield* save(driver, again, { primaryKey: "k1" })
      expect(duplicate).toEqual(
        MessageStorage.SaveResultEncoded.Duplicate({
          originalId: Snowflake.Snowflake(first.requestId),
          lastReceivedReply: Option.none()
        })
      )
      // without a primary key a request is a duplicate of the same request id
      expect((yield* save(driver, first))._tag).toBe("Duplicate")
      expect(yield* driver.requestIdForPrimaryKey("k1")).toEqual(Option.some(Snowflake.Snowflake(first.requestId)))
      expect(yield* driver.requestIdForPrimaryKey("nope")).toEqual(Option.none())

      const c0 = chunk(first, 0)
      yield* driver.saveReply(c0)
      yield* save(driver, ack(first, c0.id))
      const afterAck = yield* save(driver, again, { primaryKey: "k1" })
      expect(afterAck._tag === "Duplicate" && afterAck.lastReceivedReply).toEqual(Option.some(c0))

      const second = request(2)
      yield* save(driver, second, { primaryKey: "k2" })
      const done = exit(second, { ok: true })
      yield* driver.saveReply(done)
      const afterExit = yield* save(driver, { ...second, requestId: newId() }, { primaryKey: "k2" })
      expect(afterExit._tag === "Duplicate" && afterExit.lastReceivedReply).toEqual(Option.some(done))
      expect(store.size).toBe(2)
    }))

  it.effect("replies: unacknowledged chunks and exits; a reply id is saved once; unknown requests ignored", () =>
    Effect.gen(function*() {
      const driver = makeStore().encoded
      const req = request(1)
      yield* save(driver, req)
      const [c0, c1, c2] = [chunk(req, 0), chunk(req, 1), chunk(req, 2)]
      for (const c of [c0, c1, c2, c1]) yield* driver.saveReply(c)
      yield* driver.saveReply(exit(request(9))) // a request never saved
      expect(yield* driver.repliesFor([req.requestId])).toEqual([c0, c1, c2])
      yield* save(driver, ack(req, c1.id))
      expect(yield* driver.repliesFor([req.requestId])).toEqual([c2])
      const done = exit(req)
      yield* driver.saveReply(done)
      expect(yield* driver.repliesFor([req.requestId])).toEqual([c2, done])
      expect(yield* driver.repliesForUnfiltered([req.requestId])).toEqual([c0, c1, c2, done])
    }))

  it.effect("unprocessed: by shard in save order; requests until their exit, AckChunk and Interrupt once", () =>
    Effect.gen(function*() {
      const driver = makeStore().encoded
      const a = request(1)
      const b = request(2)
      const c = request(1)
      for (const r of [a, b, c]) yield* save(driver, r)
      const stop = interrupt(a)
      yield* save(driver, stop)
      expect(names(yield* read(driver, [1]))).toEqual([`R${a.requestId}`, `R${c.requestId}`, `I${a.requestId}`])
      expect(names(yield* read(driver, [1, 2]))).toEqual([`R${a.requestId}`, `R${b.requestId}`, `R${c.requestId}`])
      const c0 = chunk(c, 0)
      yield* driver.saveReply(c0)
      yield* driver.saveReply(exit(a))
      const [only] = yield* read(driver, [1])
      expect(names([only!])).toEqual([`R${c.requestId}`])
      expect(only!.lastSentReply).toEqual(Option.some(c0))
      expect(yield* read(driver, [3])).toEqual([])
    }))

  it.effect("deliverAt holds a request back until its time", () =>
    Effect.gen(function*() {
      const driver = makeStore().encoded
      const later = request(1)
      yield* save(driver, later, { deliverAt: 5_000 })
      expect(yield* read(driver, [1], 4_999)).toEqual([])
      expect(yield* driver.unprocessedMessagesById([Snowflake.Snowflake(later.requestId)], 4_999)).toEqual([])
      expect(names(yield* read(driver, [1], 5_000))).toEqual([`R${later.requestId}`])
    }))

  it.effect("clearReplies makes a processed request unprocessed again, in its place", () =>
    Effect.gen(function*() {
      const driver = makeStore().encoded
      const [a, b] = [request(1), request(1)]
      yield* save(driver, a, { primaryKey: "a" })
      yield* save(driver, b)
      const failed = exit(a, "failed")
      yield* driver.saveReply(failed)
      expect(names(yield* read(driver, [1]))).toEqual([`R${b.requestId}`])
      yield* driver.clearReplies(Snowflake.Snowflake(a.requestId))
      expect(names(yield* read(driver, [1]))).toEqual([`R${a.requestId}`, `R${b.requestId}`])
      expect(yield* driver.repliesFor([a.requestId])).toEqual([])
      // a cleared reply id stays refused, as in the library
      yield* driver.saveReply(failed)
      expect(yield* driver.repliesForUnfiltered([a.requestId])).toEqual([])
    }))

  it.effect("unprocessedMessagesById: the request and its unread envelopes", () =>
    Effect.gen(function*() {
      const driver = makeStore().encoded
      const [a, b] = [request(1), request(2)]
      yield* save(driver, a)
      yield* save(driver, b)
      yield* save(driver, interrupt(a))
      const ids = [Snowflake.Snowflake(a.requestId), Snowflake.Snowflake(b.requestId)] as const
      expect(names(yield* driver.unprocessedMessagesById([...ids], 0))).toEqual([
        `R${a.requestId}`,
        `R${b.requestId}`,
        `I${a.requestId}`
      ])
      yield* driver.saveReply(exit(b))
      expect(names(yield* driver.unprocessedMessagesById([...ids], 0))).toEqual([`R${a.requestId}`, `I${a.requestId}`])
    }))

  it.effect("clearAddress forgets the address's requests, replies, primary keys and unread envelopes", () =>
    Effect.gen(function*() {
      const store = makeStore()
      const driver = store.encoded
      const a = request(1, "x")
      const other = request(1, "y")
      yield* save(driver, a, { primaryKey: "a" })
      yield* save(driver, other, { primaryKey: "o" })
      yield* driver.saveReply(chunk(a, 0))
      yield* save(driver, interrupt(a))
      yield* driver.clearAddress(
        EntityAddress.EntityAddress.make({
          shardId: ShardId.make("g", 1),
          entityType: EntityType.EntityType.make("E"),
          entityId: EntityId.make("x")
        })
      )
      expect(names(yield* read(driver, [1]))).toEqual([`R${other.requestId}`])
      expect(yield* driver.repliesForUnfiltered([a.requestId])).toEqual([])
      // the library keeps the primary key (a later save would be a Duplicate of a deleted request); SQL does not
      expect(yield* driver.requestIdForPrimaryKey("a")).toEqual(Option.none())
      expect((yield* save(driver, request(1, "x"), { primaryKey: "a" }))._tag).toBe("Success")
      expect(store.size).toBe(2)
    }))

  it.effect("copies what it stores only when asked to (simulating the wire)", () =>
    Effect.gen(function*() {
      for (const copy of [true, false]) {
        const driver = new Store({ copy, now: () => 0 }).encoded
        const req = request(1)
        yield* save(driver, req)
        const [stored] = yield* read(driver, [1])
        expect(stored!.envelope).toEqual(req)
        expect(stored!.envelope === req).toBe(!copy)
      }
    }))

  it.effect("retention forgets processed requests by when they finished, never unprocessed ones", () =>
    Effect.gen(function*() {
      let now = 0
      const store = makeStore(() => now)
      const driver = store.encoded
      const old = request(1)
      const hanging = request(1)
      const recent = request(2)
      for (const [r, key] of [[old, "old"], [hanging, "hanging"], [recent, "recent"]] as const) {
        yield* save(driver, r, { primaryKey: key })
      }
      const oldExit = exit(old)
      now = 1_000
      yield* driver.saveReply(oldExit)
      now = 3_000
      yield* driver.saveReply(exit(recent))

      expect(store.prune(1_000)).toBe(0)
      expect(store.prune(2_000)).toBe(1)
      expect(store.size).toBe(2)
      expect(yield* driver.requestIdForPrimaryKey("old")).toEqual(Option.none())
      expect(yield* driver.repliesForUnfiltered([old.requestId])).toEqual([])
      // a pruned request's primary key takes a new request, its replies' ids are free again
      expect((yield* save(driver, { ...old, requestId: newId() }, { primaryKey: "old" }))._tag).toBe("Success")

      expect(store.prune(Number.MAX_SAFE_INTEGER)).toBe(1)
      expect(names(yield* read(driver, [1, 2], now)).length).toBe(2) // the hanging request and the new one
      expect(store.size).toBe(2)
    }))

  it.effect("a read visits only the unprocessed messages of the shards it asks for, whatever was processed", () =>
    Effect.gen(function*() {
      const store = makeStore()
      const library = yield* libraryDriver()
      const history = 5_000
      for (let i = 0; i < history; i++) {
        const req = request(1 + (i % 4))
        for (const driver of [store.encoded, library]) {
          yield* save(driver, req, { primaryKey: `p${i}` })
          yield* driver.saveReply(exit(req))
        }
      }
      const waiting = [request(1), request(1), request(2)]
      for (const req of waiting) {
        for (const driver of [store.encoded, library]) yield* save(driver, req)
      }
      const before = store.visited
      expect(names(yield* read(store.encoded, [1]))).toEqual(names(yield* read(library, [1])))
      expect(store.visited - before).toBe(2)
      expect(names(yield* read(store.encoded, [1, 2, 3, 4]))).toEqual(names(yield* read(library, [1, 2, 3, 4])))
      expect(store.visited - before).toBe(2 + 3)
      expect(store.size).toBe(history + waiting.length)
      expect(store.unprocessedCount).toBe(waiting.length)
    }))

  it.effect("asked with the runner's set of shards, a read looks up only the shards that have messages waiting", () =>
    Effect.gen(function*() {
      const store = makeStore()
      const [a, b, c] = [request(3), request(7), request(250)]
      for (const r of [a, b, c]) yield* save(store.encoded, r)
      // the runner holds 300 shards, among them 3 and 250 but not 7
      const held = MutableHashSet.fromIterable(
        Array.from({ length: 300 }, (_, i) => ShardId.make("g", i + (i >= 7 ? 1 : 0)))
      )
      expect([...store.queuedShards(held)].map(String).sort()).toEqual(["g:250", "g:3"])
      // what is processed leaves no queue to look at
      yield* store.encoded.saveReply(exit(a))
      expect([...store.queuedShards(held)].map(String)).toEqual(["g:250"])
      // any other iterable is read as it is
      const list = [ShardId.make("g", 1), ShardId.make("g", 7)]
      expect(store.queuedShards(list)).toBe(list)
    }))

  it.effect("with rereadAfterMs, a read skips what a read answered lately, until reset, cleared or that long passed", () =>
    Effect.gen(function*() {
      const store = new Store({ copy: false, now: () => 0, rereadAfterMs: 1_000 })
      const driver = store.encoded
      const [a, b, other] = [request(1, "x"), request(1, "y"), request(2)]
      for (const r of [a, b, other]) yield* save(driver, r)
      expect(names(yield* read(driver, [1, 2], 0))).toEqual([
        `R${a.requestId}`,
        `R${b.requestId}`,
        `R${other.requestId}`
      ])
      // in flight: not answered (nor decoded by the runner) again
      expect(yield* read(driver, [1, 2], 999)).toEqual([])
      const c = request(1, "x")
      yield* save(driver, c)
      expect(names(yield* read(driver, [1, 2], 999))).toEqual([`R${c.requestId}`])
      // an AckChunk or Interrupt is still answered once
      yield* save(driver, interrupt(a))
      expect(names(yield* read(driver, [1], 999))).toEqual([`I${a.requestId}`])
      // by id (the runner resuming an entity whose mailbox was full) is never skipped
      expect(names(yield* driver.unprocessedMessagesById([Snowflake.Snowflake(a.requestId)], 999))).toEqual([
        `R${a.requestId}`
      ])
      // resetting an address answers its requests again, not its neighbours'
      yield* driver.resetAddress(EntityAddress.EntityAddress.make({
        shardId: ShardId.make("g", 1),
        entityType: EntityType.EntityType.make("E"),
        entityId: EntityId.make("x")
      }))
      expect(names(yield* read(driver, [1, 2], 999))).toEqual([`R${a.requestId}`, `R${c.requestId}`])
      yield* driver.resetShards([shard(2)])
      expect(names(yield* read(driver, [1, 2], 999))).toEqual([`R${other.requestId}`])
      // a request whose replies are cleared is unprocessed and unread again
      yield* driver.saveReply(exit(b))
      yield* driver.clearReplies(Snowflake.Snowflake(b.requestId))
      expect(names(yield* read(driver, [1, 2], 999))).toEqual([`R${b.requestId}`])
      // past rereadAfterMs, what is still unprocessed is answered again, in save order
      expect(yield* read(driver, [1, 2], 1_998)).toEqual([])
      expect(names(yield* read(driver, [1, 2], 1_999))).toEqual(
        [a, b, other, c].map((r) => `R${r.requestId}`)
      )
      expect(yield* read(driver, [1, 2], 2_000)).toEqual([])
    }))

  it.effect("answers every operation as the library's driver does (random operations)", () =>
    Effect.gen(function*() {
      let now = 0
      const library = yield* libraryDriver(() => now)
      const ours = makeStore().encoded
      // a small deterministic generator: the same sequence on every run
      let seed = 42
      const random = (n: number) => {
        seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
        return Math.floor(seed / 2_147_483_648 * n) // the high bits: the low ones of this generator cycle
      }
      const requests: Array<{ readonly envelope: RequestEncoded; readonly key: string | null }> = []
      const replies: Array<Reply.ReplyEncoded<any>> = []
      const sequences = new Map<string, number>()
      const pick = <A>(items: ReadonlyArray<A>) => items[random(items.length)]!
      const both = <A>(op: (driver: MessageStorage.Encoded) => Effect.Effect<A, unknown>) =>
        Effect.gen(function*() {
          const expected = yield* op(library)
          const actual = yield* op(ours)
          expect(actual).toEqual(expected)
          return actual
        })
      const byKind = (messages: ReadonlyArray<{ readonly envelope: Envelope.Envelope.Encoded }>) =>
        [...names(messages)].sort()

      for (let step = 0; step < 3_000; step++) {
        now += random(20)
        const kind = random(14)
        if (kind <= 2 || requests.length === 0) {
          const key = random(3) === 0 ? null : `k${random(400)}`
          const envelope = request(1 + random(6))
          const deliverAt = random(8) === 0 ? now + random(200) : null
          const result = yield* both((d) => save(d, envelope, { ...(key ? { primaryKey: key } : {}), deliverAt }))
          if (result._tag === "Success") requests.push({ envelope, key })
        } else if (kind === 3) {
          const { envelope, key } = pick(requests)
          yield* both((d) => save(d, envelope, key ? { primaryKey: key } : {}))
        } else if (kind === 4) {
          const { envelope } = pick(requests)
          const sequence = sequences.get(envelope.requestId) ?? 0
          sequences.set(envelope.requestId, sequence + 1)
          const reply = chunk(envelope, sequence)
          replies.push(reply)
          yield* both((d) => d.saveReply(reply))
        } else if (kind <= 6) {
          const reply = exit(pick(requests).envelope, random(2) === 0 ? "ok" : { n: random(9) })
          replies.push(reply)
          yield* both((d) => d.saveReply(reply))
        } else if (kind === 7 && replies.length > 0) {
          const reply = pick(replies)
          yield* both((d) => d.saveReply(reply))
        } else if (kind === 8 && replies.length > 0) {
          const reply = pick(replies)
          const target = requests.find((r) => r.envelope.requestId === reply.requestId)
          if (target) {
            const envelope = ack(target.envelope, reply.id)
            yield* both((d) => save(d, envelope))
          }
        } else if (kind === 9) {
          const envelope = interrupt(pick(requests).envelope)
          yield* both((d) => save(d, envelope))
        } else if (kind === 10 && random(3) === 0) {
          const { envelope } = pick(requests)
          yield* both((d) => d.clearReplies(Snowflake.Snowflake(envelope.requestId)))
        } else if (kind === 11) {
          const shards = Array.from({ length: 1 + random(3) }, () => 1 + random(6))
          yield* both((d) => read(d, shards, now))
        } else if (kind === 12) {
          const ids = Array.from(
            { length: 1 + random(3) },
            () => Snowflake.Snowflake(pick(requests).envelope.requestId)
          )
          // the library answers in the order it last marked them unprocessed, ours in save order
          const expected = byKind(yield* library.unprocessedMessagesById(ids as any, now))
          expect(byKind(yield* ours.unprocessedMessagesById(ids as any, now))).toEqual(expected)
        } else {
          const ids = Array.from({ length: 1 + random(3) }, () => pick(requests).envelope.requestId)
          yield* both((d) => d.repliesFor(ids as [string, ...Array<string>]))
          yield* both((d) => d.repliesForUnfiltered(ids as [string, ...Array<string>]))
          const key = `k${random(400)}`
          yield* both((d) => d.requestIdForPrimaryKey(key))
        }
      }
      now += 1_000
      yield* both((d) => read(d, [1, 2, 3, 4, 5, 6], now))
    }))
})
