import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as TestClock from "effect/TestClock"
import * as jose from "jose"
import * as RemoteKeySet from "../src/RemoteKeySet.js"
import * as TokenVerifier from "../src/TokenVerifier.js"
import { audience, issuer, makeKey, sign, type SigningKey, startKeyServer } from "./jwks.js"

const keyServer = (keys: ReadonlyArray<jose.JWK>) =>
  Effect.acquireRelease(Effect.promise(() => startKeyServer(keys)), (server) => Effect.promise(() => server.close()))

const signingKey = (alg: string, kid: string) => Effect.promise(() => makeKey(alg, kid))

/** A key set over the test's clock. */
const remoteKeySet = (url: URL, options: RemoteKeySet.RemoteKeySetOptions = {}) =>
  Effect.map(Effect.clock, (clock) => RemoteKeySet.make(url, { ...options, clock }))

/** The key the set gives for `key`'s alg and kid, or what it threw. */
const lookup = (keys: jose.JWTVerifyGetKey, key: SigningKey) =>
  Effect.either(Effect.tryPromise({
    try: async () => keys({ alg: key.alg, kid: key.kid }, { payload: "", signature: "" }),
    catch: (error) => error
  }))

const isNoMatchingKey = (result: Either.Either<unknown, unknown>) =>
  Either.isLeft(result) && result.left instanceof jose.errors.JWKSNoMatchingKey

describe("RemoteKeySet", () => {
  it.scoped("fetches the set once for lookups that arrive together, and serves later ones from it", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const server = yield* keyServer([k1.jwk])
      const keys = yield* remoteKeySet(server.url)
      const results = yield* Effect.all(Array.from({ length: 50 }, () => lookup(keys, k1)), { concurrency: 50 })
      expect(results.every(Either.isRight)).toBe(true)
      expect(server.requests()).toBe(1)
      yield* TestClock.adjust("9 minutes")
      expect(Either.isRight(yield* lookup(keys, k1))).toBe(true)
      expect(server.requests()).toBe(1)
    }))

  it.scoped("finds a rotated-in kid with one refetch once the cooldown has passed, to the millisecond", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "2024-01")
      const k2 = yield* signingKey("RS256", "2024-02")
      const server = yield* keyServer([k1.jwk])
      const verifier = TokenVerifier.make({
        key: yield* remoteKeySet(server.url, { cooldownMs: 300 }),
        issuer,
        audience
      })
      const verify = (key: SigningKey, claims?: Record<string, unknown>) =>
        Effect.flatMap(Effect.promise(() => sign(key, claims)), (token) => Effect.either(verifier.verify(token)))

      expect(yield* verify(k1)).toMatchObject(Either.right({ tenantId: "acme", userId: "user-1" }))
      expect(server.requests()).toBe(1)

      server.publish([k1.jwk, k2.jwk])
      // within the cooldown of the last fetch: unknown, and no refetch
      const unknown = Either.left(
        expect.objectContaining({ message: "no trusted key matches the token's kid and algorithm" })
      )
      expect(yield* verify(k2)).toMatchObject(unknown)
      yield* TestClock.adjust(299)
      expect(yield* verify(k2)).toMatchObject(unknown)
      expect(server.requests()).toBe(1)

      yield* TestClock.adjust(1)
      expect(yield* verify(k2, { sub: "rotated" })).toMatchObject(Either.right({ userId: "rotated" }))
      expect(server.requests()).toBe(2)
      expect(Either.isRight(yield* verify(k1))).toBe(true)
      expect(Either.isRight(yield* verify(k2))).toBe(true)
      expect(server.requests()).toBe(2)
    }))

  it.scoped("drops a key the set no longer publishes once the cached set reaches its max age", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const k2 = yield* signingKey("ES256", "k2")
      const server = yield* keyServer([k1.jwk, k2.jwk])
      const keys = yield* remoteKeySet(server.url, { cooldownMs: 50, maxAgeMs: 200 })
      expect(Either.isRight(yield* lookup(keys, k1))).toBe(true)
      server.publish([k2.jwk])
      yield* TestClock.adjust(199)
      expect(Either.isRight(yield* lookup(keys, k1))).toBe(true)
      expect(server.requests()).toBe(1)
      yield* TestClock.adjust(1)
      expect(isNoMatchingKey(yield* lookup(keys, k1))).toBe(true)
      expect(Either.isRight(yield* lookup(keys, k2))).toBe(true)
      expect(server.requests()).toBe(2)
    }))

  it.scoped("keeps the old set when a refetch past its max age fails", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const server = yield* keyServer([k1.jwk])
      const failures: Array<unknown> = []
      const keys = yield* remoteKeySet(server.url, {
        cooldownMs: 500,
        maxAgeMs: 1000,
        onFailure: (error) => failures.push(error)
      })
      expect(Either.isRight(yield* lookup(keys, k1))).toBe(true)
      server.failWith(503)
      yield* TestClock.adjust(1000)
      expect(Either.isRight(yield* lookup(keys, k1))).toBe(true)
      expect(server.requests()).toBe(2)
      expect(failures).toHaveLength(1)
      expect(failures[0]).toBeInstanceOf(RemoteKeySet.KeySetUnavailable)
      expect(String(failures[0])).toContain("the key set answered 503")
    }))

  it.scoped("asks an issuer answering 500 once per retry interval, not once per token", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const server = yield* keyServer([k1.jwk])
      server.failWith(500)
      const failures: Array<unknown> = []
      const keys = yield* remoteKeySet(server.url, { retryMs: 400, onFailure: (error) => failures.push(error) })
      const verifier = TokenVerifier.make({ key: keys, issuer, audience })
      const tokens = yield* Effect.promise(() => Promise.all(Array.from({ length: 100 }, () => sign(k1))))
      const unavailable = Either.left(
        expect.objectContaining({ message: "the issuer's key set could not be fetched; try again later" })
      )
      const together = yield* Effect.all(tokens.map((token) => Effect.either(verifier.verify(token))), {
        concurrency: "unbounded"
      })
      for (const result of together) expect(result).toMatchObject(unavailable)
      for (const token of tokens.slice(0, 20)) {
        expect(yield* Effect.either(verifier.verify(token))).toMatchObject(unavailable)
      }
      expect(server.requests()).toBe(1)
      expect(failures).toHaveLength(1)

      server.failWith(undefined)
      yield* TestClock.adjust(399)
      expect(yield* Effect.either(verifier.verify(tokens[0]!))).toMatchObject(unavailable)
      expect(server.requests()).toBe(1)
      yield* TestClock.adjust(1)
      expect(yield* Effect.either(verifier.verify(tokens[0]!))).toMatchObject(
        Either.right({ tenantId: "acme", userId: "user-1", role: "member" })
      )
      expect(server.requests()).toBe(2)
    }))

  it.scoped("refuses a set over maxBytes, whether its length is declared or it comes in chunks", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const server = yield* keyServer([k1.jwk])
      for (const chunked of [false, true]) {
        server.chunked(chunked)
        const failures: Array<unknown> = []
        const keys = yield* remoteKeySet(server.url, { maxBytes: 64, onFailure: (error) => failures.push(error) })
        const result = yield* lookup(keys, k1)
        expect(Either.isLeft(result) && result.left).toBeInstanceOf(RemoteKeySet.KeySetUnavailable)
        expect(failures.map(String)).toEqual(["Error: the key set is over 64 bytes"])
      }
      expect(server.requests()).toBe(2)
    }))

  it.scoped("does not follow a redirect", () =>
    Effect.gen(function*() {
      const k1 = yield* signingKey("ES256", "k1")
      const elsewhere = yield* keyServer([k1.jwk])
      const server = yield* keyServer([k1.jwk])
      server.failWith(302, { location: elsewhere.url.href })
      const keys = yield* remoteKeySet(server.url)
      const result = yield* lookup(keys, k1)
      expect(Either.isLeft(result) && result.left).toBeInstanceOf(RemoteKeySet.KeySetUnavailable)
      expect(server.requests()).toBe(1)
      expect(elsewhere.requests()).toBe(0)
    }))
})
