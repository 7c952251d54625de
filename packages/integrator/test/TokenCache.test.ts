import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as jose from "jose"
import * as TokenVerifier from "../src/TokenVerifier.js"
import { audience, issuer, makeKey, sign, type SigningKey } from "./jwks.js"

/**
 * A verifier over `key` whose key lookups are counted (one per signature check) and whose clock is the test's:
 * `at.ms` is now.
 */
const setup = (key: SigningKey, cache?: { maxEntries: number; maxAgeMs: number }) => {
  const at = { ms: Date.now() }
  let lookups = 0
  const resolve: jose.JWTVerifyGetKey = () => {
    lookups++
    return key.publicKey
  }
  const verifier = TokenVerifier.make({ key: resolve, issuer, audience, now: () => at.ms, ...(cache ? { cache } : {}) })
  const verify = (token: string) => Effect.runPromise(Effect.either(verifier.verify(token)))
  return { at, lookups: () => lookups, verify }
}

const seconds = (ms: number) => Math.floor(ms / 1000)

describe("verified tokens are remembered", () => {
  it("verifies a repeated token once, and answers the same principal", async () => {
    const key = await makeKey("ES256", "k1")
    const { lookups, verify } = setup(key)
    const token = await sign(key, { role: "admin" })
    for (let i = 0; i < 5; i++) {
      expect(await verify(token)).toMatchObject(Either.right({ tenantId: "acme", userId: "user-1", role: "admin" }))
    }
    expect(lookups()).toBe(1)
    // another token (even of the same user) is its own entry
    expect(Either.isRight(await verify(await sign(key, { sub: "user-2" })))).toBe(true)
    expect(lookups()).toBe(2)
  })

  it("refuses a remembered token once it expires (past the 30 s tolerance), checking it again", async () => {
    const key = await makeKey("ES256", "k1")
    const { at, lookups, verify } = setup(key)
    const exp = seconds(at.ms) + 60
    const token = await sign(key, {}, { exp })
    expect(Either.isRight(await verify(token))).toBe(true)
    at.ms = (exp + TokenVerifier.clockTolerance) * 1000 - 1
    expect(Either.isRight(await verify(token))).toBe(true)
    expect(lookups()).toBe(1)
    at.ms = (exp + TokenVerifier.clockTolerance + 1) * 1000
    expect(await verify(token)).toMatchObject(Either.left({ message: "the token has expired" }))
    expect(lookups()).toBe(2)
  })

  it("checks a long-lived token again after the cache's max age", async () => {
    const key = await makeKey("ES256", "k1")
    const { at, lookups, verify } = setup(key)
    const token = await sign(key, {}, { exp: seconds(at.ms) + 3600 })
    await verify(token)
    at.ms += TokenVerifier.verifiedCache.maxAgeMs - 1
    await verify(token)
    expect(lookups()).toBe(1)
    at.ms += 1
    expect(Either.isRight(await verify(token))).toBe(true)
    expect(lookups()).toBe(2)
  })

  it("never remembers a refusal: a token refused for its claims is checked (and refused) each time", async () => {
    const key = await makeKey("ES256", "k1")
    const { lookups, verify } = setup(key)
    const token = await sign(key, {}, { aud: "someone-else" })
    for (let i = 0; i < 3; i++) {
      expect(await verify(token)).toMatchObject(Either.left({ message: "the token's audience (aud) is not accepted" }))
    }
    expect(lookups()).toBe(3)
  })

  it("a token signed by another key under the same kid is not taken for a remembered one", async () => {
    const key = await makeKey("ES256", "k1")
    const forger = await makeKey("ES256", "k1")
    const { lookups, verify } = setup(key)
    const good = await sign(key)
    expect(Either.isRight(await verify(good))).toBe(true)
    // same header and claims, the forger's signature: another token, so another digest
    const forged = await sign(forger, {}, { exp: Number(JSON.parse(atob(good.split(".")[1]!)).exp) })
    expect(await verify(forged)).toMatchObject(Either.left({ message: "the token's signature does not verify" }))
    expect(lookups()).toBe(2)
  })

  it("holds at most maxEntries tokens, forgetting the oldest", async () => {
    const key = await makeKey("ES256", "k1")
    const { lookups, verify } = setup(key, { maxEntries: 2, maxAgeMs: 60_000 })
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((sub) => sign(key, { sub })))
    await verify(a!)
    await verify(b!)
    await verify(c!)
    expect(lookups()).toBe(3)
    await verify(c!)
    await verify(b!)
    expect(lookups()).toBe(3)
    await verify(a!)
    expect(lookups()).toBe(4)
  })
})
