import type { TenantId } from "@altan/domain/Ids"
import * as Redis from "@altan/redis/Redis"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import * as Tracer from "effect/Tracer"
import { Redis as IORedis } from "ioredis"
import { randomBytes, randomUUID } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as SecretStore from "../src/SecretStore.js"
import * as SecretStoreConfig from "../src/SecretStoreConfig.js"
import * as SecretStoreGcp from "../src/SecretStoreGcp.js"
import * as SecretStoreRedis from "../src/SecretStoreRedis.js"

const acme = "acme" as TenantId
const globex = "globex" as TenantId

/** A value that must never show up outside `get`: not in Redis, errors, spans or the fake's logs. */
const secretValue = () => `sk-live-${randomUUID()}`

const newKey = (id?: string) => `${id ? `${id}:` : ""}${randomBytes(32).toString("base64")}`
const ring = (current: string, previous: ReadonlyArray<string> = []) =>
  Either.getOrThrow(SecretStoreRedis.makeMasterKeyRing(current, previous))

const get = (tenantId: TenantId, name: string) =>
  Effect.flatMap(SecretStore.SecretStore, (store) => store.get(tenantId, name))
const put = (tenantId: TenantId, name: string, value: string) =>
  Effect.flatMap(SecretStore.SecretStore, (store) => store.put(tenantId, name, Redacted.make(value)))
const del = (tenantId: TenantId, name: string) =>
  Effect.flatMap(SecretStore.SecretStore, (store) => store.delete(tenantId, name))
const value = (tenantId: TenantId, name: string) => get(tenantId, name).pipe(Effect.map(Option.map(Redacted.value)))

/** The error of a failed effect, and proof that nothing about it spells the secret. */
const failure = <A, R>(effect: Effect.Effect<A, SecretStore.SecretStoreError, R>, secret: string) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    if (!Exit.isFailure(exit) || exit.cause._tag !== "Fail") {
      return expect.fail(`expected a SecretStoreError, got ${String(exit)}`)
    }
    const error = exit.cause.error
    expect(error).toBeInstanceOf(SecretStore.SecretStoreError)
    expect(`${error.message} ${String(error)} ${JSON.stringify(error)}`).not.toContain(secret)
    return error
  })

// ---------------------------------------------------------------------------------------------------------------
// Redis at 127.0.0.1:6379 (REDIS_URL overrides), under a prefix of this run's own
// ---------------------------------------------------------------------------------------------------------------

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `altan-test-${randomUUID().slice(0, 12)}`

const withClient = <A>(f: (client: IORedis) => Promise<A>): Effect.Effect<A> =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = new IORedis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => f(client)),
    (client) => Effect.promise(() => client.quit())
  )

const scanKeys = (client: IORedis, pattern: string) =>
  (async () => {
    const keys: Array<string> = []
    let cursor = "0"
    do {
      const [next, found] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000)
      cursor = next
      keys.push(...found)
    } while (cursor !== "0")
    return keys
  })()

/** Every stored byte under the prefix, as text: the hashes' fields and values and the strings. */
const rawContents = withClient(async (client) => {
  const parts: Array<string> = []
  for (const key of await scanKeys(client, `${prefix}:*`)) {
    const type = await client.type(key)
    if (type === "hash") {
      for (const [field, blob] of Object.entries(await client.hgetallBuffer(key))) {
        parts.push(field, blob.toString("latin1"))
      }
    } else if (type === "string") parts.push((await client.getBuffer(key))!.toString("latin1"))
    else parts.push(`${key}: ${type}`)
  }
  return parts.join("\n")
})

const secretsKey = (tenant: string) => `${prefix}:t:${tenant}:secrets`
const dekKey = (tenant: string) => `${prefix}:t:${tenant}:dek`
const hget = (key: string, field: string) => withClient((client) => client.hget(key, field))
const hset = (key: string, field: string, blob: string) => withClient((client) => client.hset(key, field, blob))
const hgetall = (key: string) => withClient((client) => client.hgetall(key))
const getKey = (key: string) => withClient((client) => client.get(key))

afterAll(async () => {
  await Effect.runPromise(withClient(async (client) => {
    // `${prefix}:*` and the rotation test's `${prefix}-rotation:*`
    const keys = await scanKeys(client, `${prefix}*`)
    if (keys.length > 0) await client.del(...keys)
  }))
})

const keyA = newKey()
const redis = (masterKeys: SecretStoreRedis.MasterKeyRing, p = prefix) =>
  SecretStoreRedis.layer({ prefix: p, masterKeys }).pipe(Layer.provide(Layer.orDie(Redis.layer({ url: redisUrl }))))
const redisA = redis(ring(keyA))
const rewrap = (options: SecretStoreRedis.Options) =>
  SecretStoreRedis.rewrapDataKeys(options).pipe(Effect.provide(Redis.layer({ url: redisUrl })))

describe("SecretStoreRedis.layer", () => {
  it.live("puts, gets and deletes a tenant's secrets", () =>
    Effect.gen(function*() {
      const first = secretValue()
      const second = secretValue()
      expect(yield* value(acme, "roundtrip")).toEqual(Option.none())
      yield* put(acme, "roundtrip", first)
      expect(yield* value(acme, "roundtrip")).toEqual(Option.some(first))
      yield* put(acme, "roundtrip", second)
      expect(yield* value(acme, "roundtrip")).toEqual(Option.some(second))
      // another tenant and another name see nothing
      expect(yield* value(globex, "roundtrip")).toEqual(Option.none())
      expect(yield* value(acme, "roundtrip2")).toEqual(Option.none())
      // values print redacted
      const read = yield* get(acme, "roundtrip")
      expect(String(read)).not.toContain(second)
      expect(JSON.stringify(read)).not.toContain(second)
      expect(yield* del(acme, "roundtrip")).toBe(true)
      expect(yield* del(acme, "roundtrip")).toBe(false)
      expect(yield* value(acme, "roundtrip")).toEqual(Option.none())
    }).pipe(Effect.provide(redisA)))

  it.live("keeps only ciphertexts in Redis, under the documented layout", () =>
    Effect.gen(function*() {
      const secret = secretValue()
      yield* put(acme, "slack_token", secret)
      yield* put(acme, "unicode ✓ name", `${secret}-é`)
      const raw = yield* rawContents
      expect(raw).not.toContain(secret)
      expect(raw).not.toContain(Buffer.from(secret).toString("base64"))
      expect(raw).not.toContain(Buffer.from(secret).toString("base64url"))
      expect(raw).not.toContain(Buffer.from(secret).toString("hex"))
      const blob = (yield* hget(secretsKey(acme), "slack_token"))!
      expect(blob).toMatch(/^v1\.[0-9a-f]{12}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/)
      const wrapped = (yield* getKey(dekKey(acme)))!
      expect(wrapped.split(".")[0]).toBe("v1")
      expect(wrapped.split(".")[1]).toBe(ring(keyA).current.id)
      // a fresh IV each time: the same value twice gives two ciphertexts
      yield* put(acme, "slack_token", secret)
      expect(yield* hget(secretsKey(acme), "slack_token")).not.toBe(blob)
      expect(yield* value(acme, "unicode ✓ name")).toEqual(Option.some(`${secret}-é`))
    }).pipe(Effect.provide(redisA)))

  it.live("fails closed on a ciphertext moved to another tenant or another name", () =>
    Effect.gen(function*() {
      const acmeSecret = secretValue()
      const globexSecret = secretValue()
      yield* put(acme, "swap", acmeSecret)
      yield* put(globex, "swap", globexSecret)
      yield* put(acme, "other", globexSecret)

      // acme's ciphertext in globex's slot
      yield* hset(secretsKey(globex), "swap", (yield* hget(secretsKey(acme), "swap"))!)
      const moved = yield* failure(get(globex, "swap"), acmeSecret)
      expect(moved.message).toContain(`cannot decrypt secret "swap" of tenant globex`)

      // one name's ciphertext under another name of the same tenant (same data key)
      yield* hset(secretsKey(acme), "other", (yield* hget(secretsKey(acme), "swap"))!)
      const renamed = yield* failure(get(acme, "other"), acmeSecret)
      expect(renamed.message).toContain("does not authenticate")

      // the data key and the ciphertext copied together: the wrapped key is bound to its tenant too
      const initech = `initech-${randomUUID().slice(0, 8)}` as TenantId
      yield* withClient(async (client) => client.set(dekKey(initech), (await client.get(dekKey(acme)))!))
      yield* hset(secretsKey(initech), "swap", (yield* hget(secretsKey(acme), "swap"))!)
      const copied = yield* failure(get(initech, "swap"), acmeSecret)
      expect(copied.message).toContain(`cannot unwrap the data key of tenant ${initech}`)

      // a flipped byte
      const blob = (yield* hget(secretsKey(acme), "swap"))!
      const parts = blob.split(".")
      const ct = Buffer.from(parts[3]!, "base64url")
      ct[0] = ct[0]! ^ 1
      yield* hset(secretsKey(acme), "swap", [...parts.slice(0, 3), ct.toString("base64url"), parts[4]].join("."))
      yield* failure(get(acme, "swap"), acmeSecret)

      // garbage
      yield* hset(secretsKey(acme), "swap", "not a blob")
      expect((yield* failure(get(acme, "swap"), acmeSecret)).message).toContain("malformed")
    }).pipe(Effect.provide(redisA)))

  it.live("fails closed with a wrong master key, and does not replace the data key", () =>
    Effect.gen(function*() {
      const secret = secretValue()
      yield* put(acme, "wrong-key", secret).pipe(Effect.provide(redisA))
      const wrapped = yield* getKey(dekKey(acme))
      const other = ring(newKey("other"))
      const error = yield* failure(get(acme, "wrong-key").pipe(Effect.provide(redis(other))), secret)
      expect(error.message).toMatch(/^cannot unwrap the data key of tenant acme: wrong or missing master key/)
      expect(error.message).toContain(`"${ring(keyA).current.id}"`)
      expect(error.message).toContain(`"other"`)
      yield* failure(put(acme, "wrong-key-2", secretValue()).pipe(Effect.provide(redis(other))), secret)
      expect(yield* getKey(dekKey(acme))).toBe(wrapped)
      // a tenant without a secret still answers none without touching keys
      expect(yield* value(`fresh-${randomUUID()}` as TenantId, "x").pipe(Effect.provide(redis(other))))
        .toEqual(Option.none())
      expect(yield* value(acme, "wrong-key").pipe(Effect.provide(redisA))).toEqual(Option.some(secret))
    }))

  it.live("rotates the master key: old keys unwrap, rewrapDataKeys moves every data key, ciphertexts stay", () =>
    Effect.gen(function*() {
      const p = `${prefix}-rotation`
      const a = newKey("a")
      const b = newKey("b")
      const tenants = ["t1", "t2", "t3"] as Array<TenantId>
      const values = new Map(tenants.map((t) => [t, secretValue()]))
      for (const t of tenants) yield* put(t, "api_key", values.get(t)!).pipe(Effect.provide(redis(ring(a), p)))
      const secretsOf = (t: string) => hgetall(`${p}:t:${t}:secrets`)
      const before = yield* Effect.forEach(tenants, secretsOf)

      // restart with current = B, previous = A: everything readable, new tenants get B
      const both = ring(b, [a])
      for (const t of tenants) {
        expect(yield* value(t, "api_key").pipe(Effect.provide(redis(both, p)))).toEqual(Option.some(values.get(t)))
      }
      const t4 = "t4" as TenantId
      values.set(t4, secretValue())
      yield* put(t4, "api_key", values.get(t4)!).pipe(Effect.provide(redis(both, p)))
      expect((yield* getKey(`${p}:t:t4:dek`))!.split(".")[1]).toBe("b")

      const result = yield* rewrap({ prefix: p, masterKeys: both })
      expect(result).toEqual({ rewrapped: 3, unchanged: 1 })
      for (const t of [...tenants, t4]) expect((yield* getKey(`${p}:t:${t}:dek`))!.split(".")[1]).toBe("b")
      expect(yield* rewrap({ prefix: p, masterKeys: both }))
        .toEqual({ rewrapped: 0, unchanged: 4 })

      // restart with only B: all readable; the secrets' ciphertexts are byte-identical
      expect(yield* Effect.forEach(tenants, secretsOf)).toEqual(before)
      for (const t of [...tenants, t4]) {
        expect(yield* value(t, "api_key").pipe(Effect.provide(redis(ring(b), p)))).toEqual(Option.some(values.get(t)))
      }
      // and A alone no longer opens anything
      yield* failure(get(tenants[0]!, "api_key").pipe(Effect.provide(redis(ring(a), p))), values.get(tenants[0]!)!)
      // a rewrap with a ring that opens none of the data keys fails closed
      const foreign = yield* Effect.flip(
        rewrap({ prefix: p, masterKeys: ring(newKey("c")) })
      )
      expect(foreign.message).toContain("wrong or missing master key")
    }))

  it.live("two runners creating a tenant's first data key agree on one", () =>
    Effect.gen(function*() {
      const ring1 = ring(keyA)
      for (let round = 0; round < 10; round++) {
        const tenant = `race-${round}-${randomUUID().slice(0, 8)}` as TenantId
        const one = secretValue()
        const two = secretValue()
        // two layers: two connections, two processes' worth of state
        yield* Effect.all([
          put(tenant, "one", one).pipe(Effect.provide(redis(ring1))),
          put(tenant, "two", two).pipe(Effect.provide(redis(ring1)))
        ], { concurrency: "unbounded" })
        const fresh = redis(ring1)
        expect(yield* value(tenant, "one").pipe(Effect.provide(fresh))).toEqual(Option.some(one))
        expect(yield* value(tenant, "two").pipe(Effect.provide(fresh))).toEqual(Option.some(two))
        const ids = Object.values(yield* hgetall(secretsKey(tenant))).map((blob) => blob.split(".")[1])
        expect(new Set(ids).size).toBe(1)
      }
    }))

  it.live("fails with a SecretStoreError when a Redis command fails", () =>
    Effect.gen(function*() {
      const tenant = `wrongtype-${randomUUID().slice(0, 8)}` as TenantId
      yield* withClient((client) => client.set(secretsKey(tenant), "not a hash"))
      const error = yield* failure(get(tenant, "name"), "not a hash")
      expect(error.message).toContain("secret store: redis HGET failed: WRONGTYPE")
    }).pipe(Effect.provide(redisA)))

  it.live("over a Redis that cannot be reached, the process's connection fails, naming the host but no password", () =>
    Effect.gen(function*() {
      const unreachable = Redis.layer({ url: "redis://user:hunter2@127.0.0.1:1" })
      const error = yield* Effect.flip(
        Layer.build(SecretStoreRedis.layer({ masterKeys: ring(keyA) }).pipe(Layer.provide(unreachable)))
      ).pipe(Effect.scoped)
      expect(error.message).toContain("cannot connect to redis at redis://127.0.0.1:1")
      expect(error.message).not.toContain("hunter2")
    }))
})

describe("master keys", () => {
  const parse = (env: Record<string, string>) =>
    Effect.flip(
      Effect.withConfigProvider(SecretStoreRedis.masterKeysConfig, ConfigProvider.fromMap(new Map(Object.entries(env))))
    )

  it.effect("reads SECRETS_MASTER_KEY and SECRETS_MASTER_KEYS_PREVIOUS", () =>
    Effect.gen(function*() {
      const current = newKey("k2")
      const previous = [newKey("k1"), newKey()]
      const keys = yield* Effect.withConfigProvider(
        SecretStoreRedis.masterKeysConfig,
        ConfigProvider.fromMap(
          new Map([["SECRETS_MASTER_KEY", current], ["SECRETS_MASTER_KEYS_PREVIOUS", ` ${previous.join(" , ")} `]])
        )
      )
      expect(keys.current.id).toBe("k2")
      expect(keys.previous.map((k) => k.id)[0]).toBe("k1")
      expect(keys.previous[1]!.id).toMatch(/^[0-9a-f]{12}$/)
      // the id of an unnamed key is stable across restarts
      expect(ring(previous[1]!).current.id).toBe(keys.previous[1]!.id)
      // keys print without their bytes
      expect(JSON.stringify(keys)).not.toContain(current.slice(3, 20))
      expect(String(keys.current.key)).not.toContain(current.slice(3, 20))
    }))

  it.effect("explains what is wrong without echoing the key", () =>
    Effect.gen(function*() {
      const short = randomBytes(16).toString("base64")
      const missing = yield* parse({})
      expect(String(missing)).toContain("SECRETS_MASTER_KEY")
      const tooShort = yield* parse({ SECRETS_MASTER_KEY: short })
      expect(String(tooShort)).toContain("must decode to 32 bytes (AES-256), got 16")
      expect(String(tooShort)).not.toContain(short)
      const notBase64 = yield* parse({ SECRETS_MASTER_KEY: "not base64!" })
      expect(String(notBase64)).toContain("must be base64 of 32 random bytes")
      const badPrevious = yield* parse({ SECRETS_MASTER_KEY: newKey(), SECRETS_MASTER_KEYS_PREVIOUS: `old:${short}` })
      expect(String(badPrevious)).toContain("SECRETS_MASTER_KEYS_PREVIOUS entry 1 must decode to 32 bytes")
      expect(String(badPrevious)).not.toContain(short)
      const badId = yield* parse({ SECRETS_MASTER_KEY: `a.b:${randomBytes(32).toString("base64")}` })
      expect(String(badId)).toContain("key id")
      const twice = yield* parse({ SECRETS_MASTER_KEY: newKey("same"), SECRETS_MASTER_KEYS_PREVIOUS: newKey("same") })
      expect(String(twice)).toContain(`master key id "same" is used twice`)
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// Google Secret Manager: a loopback fake of its REST surface, reached by the real client's HTTP/JSON transport
// ---------------------------------------------------------------------------------------------------------------

interface Call {
  readonly method: string
  readonly path: string
  readonly query: URLSearchParams
  readonly json: any
  readonly authorization: string | undefined
}

interface FakeSecret {
  readonly labels: Record<string, string>
  readonly annotations: Record<string, string>
  readonly replication: unknown
  readonly versions: Array<string>
}

const project = "altan-test"
const calls: Array<Call> = []
/** Every request the fake ever received, never cleared: what the value-leak check scans. */
const everyCall: Array<Call> = []
const secrets = new Map<string, FakeSecret>()
/** Secret ids that answer 500. */
const broken = new Set<string>()
/** Secret ids "another runner" creates right after an `addVersion` found them missing. */
const createdBehind = new Set<string>()
let server: http.Server
let port: number

const googleError = (status: number, code: string, message: string) => ({
  status,
  body: { error: { code: status, message, status: code } }
})

const secretManager = (method: string, path: string, query: URLSearchParams, json: any) => {
  const route = path.match(/^\/v1\/projects\/([^/]+)\/secrets(?:\/([^/:]+)(?:\/versions\/([^/:]+))?)?(?::(\w+))?$/)
  if (!route || route[1] !== project) return googleError(404, "NOT_FOUND", `no route ${method} ${path}`)
  const [, , id, version, verb] = route
  if (id && broken.has(id)) return googleError(500, "INTERNAL", "Internal error encountered.")
  const name = `projects/${project}/secrets/${id}`
  if (method === "POST" && !id && !verb) {
    const secretId = query.get("secretId")!
    if (broken.has(secretId)) return googleError(500, "INTERNAL", "Internal error encountered.")
    if (!/^[A-Za-z0-9_-]{1,255}$/.test(secretId)) return googleError(400, "INVALID_ARGUMENT", "bad secret id")
    if (!json?.replication) return googleError(400, "INVALID_ARGUMENT", "replication is required")
    if (secrets.has(secretId)) return googleError(409, "ALREADY_EXISTS", `Secret [${secretId}] already exists.`)
    secrets.set(secretId, {
      labels: json.labels ?? {},
      annotations: json.annotations ?? {},
      replication: json.replication,
      versions: []
    })
    return { status: 200, body: { name: `projects/${project}/secrets/${secretId}`, ...json } }
  }
  const secret = id ? secrets.get(id) : undefined
  if (!secret) {
    if (createdBehind.delete(id!)) {
      secrets.set(id!, { labels: {}, annotations: {}, replication: { automatic: {} }, versions: [] })
    }
    return googleError(404, "NOT_FOUND", `Secret [${name}] not found or has no versions.`)
  }
  if (method === "POST" && !version && verb === "addVersion") {
    secret.versions.push(json.payload.data)
    return { status: 200, body: { name: `${name}/versions/${secret.versions.length}`, state: 1 } }
  }
  if (method === "GET" && version === "latest" && verb === "access") {
    if (secret.versions.length === 0) return googleError(404, "NOT_FOUND", `Secret [${name}] has no versions.`)
    return {
      status: 200,
      body: { name: `${name}/versions/${secret.versions.length}`, payload: { data: secret.versions.at(-1) } }
    }
  }
  if (method === "DELETE" && !version && !verb) {
    secrets.delete(id!)
    return { status: 200, body: {} }
  }
  return googleError(404, "NOT_FOUND", `no route ${method} ${path}`)
}

beforeAll(async () => {
  server = http.createServer(async (req, res) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks).toString()
    const url = new URL(req.url!, "http://fake")
    const json = body === "" ? undefined : JSON.parse(body)
    const path = decodeURIComponent(url.pathname)
    const call = { method: req.method!, path, query: url.searchParams, json, authorization: req.headers.authorization }
    calls.push(call)
    everyCall.push(call)
    const reply = secretManager(req.method!, path, url.searchParams, json)
    res.writeHead(reply.status, { "content-type": "application/json" })
    res.end(JSON.stringify(reply.body))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as AddressInfo).port
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))
beforeEach(() => {
  calls.length = 0
  broken.clear()
  createdBehind.clear()
})

/** An auth client that adds no credentials: the fake needs none, and no Google endpoint is ever asked. */
const noAuth = {
  getRequestHeaders: async () => new Headers(),
  fetch: (url: string | URL, init: RequestInit) => fetch(url, init)
} as unknown as NonNullable<SecretStoreGcp.GcpClientOptions["authClient"]>

const gcp = () =>
  SecretStoreGcp.layer({
    projectId: project,
    client: { fallback: true, apiEndpoint: "127.0.0.1", port, protocol: "http", authClient: noAuth }
  })

const summary = () => calls.map((c) => `${c.method} ${c.path}`)

describe("SecretStoreGcp.layer", () => {
  it.live("stores one secret per tenant and name, labelled with the tenant, and reads the latest version", () =>
    Effect.gen(function*() {
      const first = secretValue()
      const second = secretValue()
      const id = "altan-acme-api_5fkey"
      const secret = `/v1/projects/${project}/secrets/${id}`

      yield* put(acme, "api_key", first)
      expect(summary()).toEqual([
        `POST ${secret}:addVersion`,
        `POST /v1/projects/${project}/secrets`,
        `POST ${secret}:addVersion`
      ])
      const create = calls[1]!
      expect(create.query.get("secretId")).toBe(id)
      // the client's JSON also carries the message's empty maps (tags, versionAliases)
      expect(create.json).toMatchObject({
        replication: { automatic: {} },
        labels: { "altan-tenant": "acme" },
        annotations: { "altan-tenant-id": "acme", "altan-secret-name": "api_key" }
      })
      // the parent is in the path; the body is the payload, base64
      expect(calls[2]!.json).toEqual({ payload: { data: Buffer.from(first).toString("base64") } })
      expect(calls.every((c) => c.authorization === undefined)).toBe(true)

      calls.length = 0
      expect(yield* value(acme, "api_key")).toEqual(Option.some(first))
      expect(summary()).toEqual([`GET ${secret}/versions/latest:access`])

      // an update is one new version
      calls.length = 0
      yield* put(acme, "api_key", second)
      expect(summary()).toEqual([`POST ${secret}:addVersion`])
      expect(secrets.get(id)!.versions).toHaveLength(2)
      expect(yield* value(acme, "api_key")).toEqual(Option.some(second))

      // delete destroys the secret with every version
      calls.length = 0
      expect(yield* del(acme, "api_key")).toBe(true)
      expect(summary()).toEqual([`DELETE ${secret}`])
      expect(secrets.has(id)).toBe(false)
      expect(yield* del(acme, "api_key")).toBe(false)
      expect(yield* value(acme, "api_key")).toEqual(Option.none())

      // the fake only ever saw the value base64-encoded, inside addVersion payloads
      const versions = everyCall.filter((c) => c.path.endsWith(":addVersion"))
      expect(versions.map((c) => c.json.payload.data)).toEqual(
        expect.arrayContaining([first, second].map((v) => Buffer.from(v).toString("base64")))
      )
      const seen = JSON.stringify(everyCall)
      expect(seen).not.toContain(first)
      expect(seen).not.toContain(second)
    }).pipe(Effect.provide(gcp())))

  it.live("derives safe, distinct secret ids from any tenant and name", () =>
    Effect.gen(function*() {
      const tenant = "Ünïcode/Tenant:1" as TenantId
      const name = "a-b.c d/é"
      yield* put(tenant, name, secretValue())
      const create = calls.find((c) => c.path.endsWith("/secrets"))!
      const id = create.query.get("secretId")!
      expect(id).toMatch(/^[A-Za-z0-9_-]{1,255}$/)
      expect(id).toBe(SecretStoreGcp.gcpSecretId(tenant, name))
      expect(create.json.labels["altan-tenant"]).toMatch(/^[a-z0-9_-]{1,63}$/)
      expect(create.json.annotations).toEqual({ "altan-tenant-id": tenant, "altan-secret-name": name })

      // separators inside a part cannot make two pairs collide
      expect(SecretStoreGcp.gcpSecretId("a-b", "c")).not.toBe(SecretStoreGcp.gcpSecretId("a", "b-c"))
      expect(SecretStoreGcp.gcpSecretId("a_2d", "b")).not.toBe(SecretStoreGcp.gcpSecretId("a-", "b"))
      // too long for a readable id: a hash, still valid
      const long = SecretStoreGcp.gcpSecretId(acme, "n".repeat(300))
      expect(long).toMatch(/^altan_[0-9a-f]{64}$/)
      yield* put(acme, "n".repeat(300), "x")
      expect(secrets.has(long)).toBe(true)
      expect(SecretStoreGcp.gcpTenantLabel("acme_1-x")).toBe("acme_1-x")
      expect(SecretStoreGcp.gcpTenantLabel("Acme")).toMatch(/^acme-[0-9a-f]{8}$/)
    }).pipe(Effect.provide(gcp())))

  it.live("treats a secret another runner created meanwhile (ALREADY_EXISTS) as created", () =>
    Effect.gen(function*() {
      const id = SecretStoreGcp.gcpSecretId(globex, "raced")
      const secret = secretValue()
      createdBehind.add(id)
      yield* put(globex, "raced", secret)
      expect(summary().map((c) => c.split(" ")[0])).toEqual(["POST", "POST", "POST"])
      expect(yield* value(globex, "raced")).toEqual(Option.some(secret))
    }).pipe(Effect.provide(gcp())))

  it.live("maps server errors to SecretStoreError without the value", () =>
    Effect.gen(function*() {
      const secret = secretValue()
      yield* put(acme, "flaky", secret)
      const id = SecretStoreGcp.gcpSecretId(acme, "flaky")
      broken.add(id)
      const read = yield* failure(get(acme, "flaky"), secret)
      expect(read.message).toContain(`accessSecretVersion of projects/${project}/secrets/${id}/versions/latest failed`)
      const write = yield* failure(put(acme, "flaky", secret), secret)
      expect(write.message).toContain("addSecretVersion")
      yield* failure(del(acme, "flaky"), secret)
      broken.add(SecretStoreGcp.gcpSecretId(acme, "new"))
      yield* failure(put(acme, "new", secret), secret)
    }).pipe(Effect.provide(gcp())))
})

// ---------------------------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------------------------

describe("withCache", () => {
  it.effect("answers repeated reads from memory within the TTL, and sees its own writes at once", () =>
    Effect.gen(function*() {
      const first = secretValue()
      const second = secretValue()
      const accesses = () => calls.filter((c) => c.path.endsWith(":access")).length

      expect(yield* value(acme, "cached")).toEqual(Option.none())
      expect(yield* value(acme, "cached")).toEqual(Option.none())
      expect(accesses()).toBe(1)

      yield* put(acme, "cached", first)
      expect(yield* value(acme, "cached")).toEqual(Option.some(first))
      expect(yield* value(acme, "cached")).toEqual(Option.some(first))
      expect(accesses()).toBe(2)

      // another process writes: seen once the TTL has passed
      const id = SecretStoreGcp.gcpSecretId(acme, "cached")
      secrets.get(id)!.versions.push(Buffer.from(second).toString("base64"))
      yield* TestClock.adjust(Duration.seconds(29))
      expect(yield* value(acme, "cached")).toEqual(Option.some(first))
      expect(accesses()).toBe(2)
      yield* TestClock.adjust(Duration.seconds(2))
      expect(yield* value(acme, "cached")).toEqual(Option.some(second))
      expect(accesses()).toBe(3)

      // failures are not cached
      broken.add(id)
      yield* TestClock.adjust(Duration.seconds(31))
      yield* failure(get(acme, "cached"), second)
      broken.delete(id)
      expect(yield* value(acme, "cached")).toEqual(Option.some(second))

      expect(yield* del(acme, "cached")).toBe(true)
      expect(yield* value(acme, "cached")).toEqual(Option.none())
    }).pipe(Effect.provide(gcp().pipe(SecretStore.withCache("30 seconds")))))

  it.effect("a zero TTL caches nothing", () =>
    Effect.gen(function*() {
      yield* value(globex, "uncached")
      yield* value(globex, "uncached")
      expect(calls.filter((c) => c.path.endsWith(":access"))).toHaveLength(2)
    }).pipe(Effect.provide(gcp().pipe(SecretStore.withCache(Duration.zero)))))
})

// ---------------------------------------------------------------------------------------------------------------
// Spans and configuration
// ---------------------------------------------------------------------------------------------------------------

describe("spans", () => {
  it.live("name the method and the tenant, never the value", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.Span> = []
      const tracer = yield* Effect.tracer
      const recording = Tracer.make({
        span: (...args) => {
          const span = tracer.span(...args)
          spans.push(span)
          return span
        },
        context: tracer.context
      })
      const secret = secretValue()
      yield* Effect.gen(function*() {
        yield* put(acme, "traced", secret)
        yield* get(acme, "traced")
        yield* del(acme, "traced")
      }).pipe(Effect.provide(redisA), Effect.withTracer(recording))
      const ours = spans.filter((s) => s.name.startsWith("SecretStore."))
      expect(ours.map((s) => s.name)).toEqual(["SecretStore.put", "SecretStore.get", "SecretStore.delete"])
      expect(Object.fromEntries(ours[1]!.attributes)).toEqual({
        "altan.tenant_id": "acme",
        "altan.secret_name": "traced",
        "altan.secret_backend": "redis"
      })
      for (const span of spans) {
        expect(JSON.stringify([...span.attributes])).not.toContain(secret)
      }
    }))
})

describe("SecretStoreConfig.layerFromConfig", () => {
  const build = (
    env: Record<string, string>,
    shared: Option.Option<Layer.Layer<Redis.Redis, Redis.RedisError>> = Option.none()
  ) =>
    Effect.gen(function*() {
      const store = yield* SecretStore.SecretStore
      yield* store.put(acme, "config", Redacted.make("v"))
      return yield* store.get(acme, "config")
    }).pipe(
      Effect.provide(SecretStoreConfig.layerFromConfig(shared)),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
    )

  it.live("picks the backend from SECRETS_BACKEND, memory by default", () =>
    Effect.gen(function*() {
      expect(yield* build({})).toEqual(Option.some(Redacted.make("v")))
      // the redis backend needs REDIS_URL and a master key
      const noUrl = yield* Effect.flip(build({ SECRETS_BACKEND: "redis", SECRETS_MASTER_KEY: newKey() }))
      expect(String(noUrl)).toContain("REDIS_URL")
      const noKey = yield* Effect.flip(build({ SECRETS_BACKEND: "redis" }, Option.some(Redis.layer({ url: redisUrl }))))
      expect(String(noKey)).toContain("SECRETS_MASTER_KEY")
      const noProject = yield* Effect.flip(build({ SECRETS_BACKEND: "gcp" }))
      expect(String(noProject)).toContain("GCP_PROJECT")
      const unknown = yield* Effect.flip(build({ SECRETS_BACKEND: "vault" }))
      expect(String(unknown)).toContain("SECRETS_BACKEND")
      const badTtl = yield* Effect.flip(
        build(
          { SECRETS_BACKEND: "redis", SECRETS_MASTER_KEY: newKey(), SECRETS_CACHE_TTL: "soon" },
          Option.some(Redis.layer({ url: redisUrl }))
        )
      )
      expect(String(badTtl)).toContain("SECRETS_CACHE_TTL")

      const config = yield* SecretStoreConfig.loadConfig.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["SECRETS_BACKEND", "gcp"], ["GOOGLE_CLOUD_PROJECT", "p1"]]))
        )
      )
      expect(config).toEqual({ backend: "gcp", projectId: "p1", cacheTtl: Duration.seconds(30) })
    }))
})
