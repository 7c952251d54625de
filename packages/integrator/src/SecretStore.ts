import { errorMessage } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import { isReservedSecretName } from "@altan/domain/Secret"
import { Redis } from "@altan/redis/Redis"
import type { SecretManagerServiceClient } from "@google-cloud/secret-manager"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes
} from "node:crypto"
import { makeReadCache } from "./internal/ReadCache.js"

/**
 * The secret store could not answer (a backend down, a ciphertext that does not decrypt). Reads fail
 * closed with this; the message never carries a secret value.
 */
export class SecretStoreError extends Data.TaggedError("SecretStoreError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A tenant's secrets (API keys, client secrets, tokens), by name. Values stay `Redacted` end to end,
 * so they print as `<redacted>` in logs, traces and errors.
 */
export class SecretStore extends Context.Tag("@altan/integrator/SecretStore")<SecretStore, {
  readonly get: (tenantId: TenantId, name: string) => Effect.Effect<Option.Option<Redacted.Redacted>, SecretStoreError>
  readonly put: (tenantId: TenantId, name: string, value: Redacted.Redacted) => Effect.Effect<void, SecretStoreError>
  readonly delete: (tenantId: TenantId, name: string) => Effect.Effect<boolean, SecretStoreError>
}>() {}

/** In-process secrets: the embedded default and tests. */
export const layerMemory: Layer.Layer<SecretStore> = Layer.sync(SecretStore, () => {
  const secrets = new Map<string, Redacted.Redacted>()
  const key = (tenantId: TenantId, name: string) => `${tenantId}\u0000${name}`
  return {
    get: (tenantId, name) => Effect.sync(() => Option.fromNullable(secrets.get(key(tenantId, name)))),
    put: (tenantId, name, value) => Effect.sync(() => void secrets.set(key(tenantId, name), value)),
    delete: (tenantId, name) => Effect.sync(() => secrets.delete(key(tenantId, name)))
  }
})

/** Spans named after the service method, carrying the tenant and the secret's name, never its value. */
const traced = (backend: string, store: SecretStore["Type"]): SecretStore["Type"] => {
  const span = (method: string, tenantId: TenantId, name: string) =>
    Effect.withSpan(`SecretStore.${method}`, {
      attributes: { "altan.tenant_id": tenantId, "altan.secret_name": name, "altan.secret_backend": backend },
      captureStackTrace: false
    })
  return {
    get: (tenantId, name) => store.get(tenantId, name).pipe(span("get", tenantId, name)),
    put: (tenantId, name, value) => store.put(tenantId, name, value).pipe(span("put", tenantId, name)),
    delete: (tenantId, name) => store.delete(tenantId, name).pipe(span("delete", tenantId, name))
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Master keys and envelope encryption
// ---------------------------------------------------------------------------------------------------------------

/** One operator master key: it wraps (encrypts) the tenants' data keys and never touches a secret itself. */
export interface MasterKey {
  /** Recorded in every data key it wraps; the operator's `id:` or a fingerprint of the key. */
  readonly id: string
  /** 256-bit AES key; a `KeyObject` prints without its bytes. */
  readonly key: KeyObject
}

/** The master keys of a process: `current` wraps new data keys, `previous` ones still unwrap old ones. */
export interface MasterKeyRing {
  readonly current: MasterKey
  readonly previous: ReadonlyArray<MasterKey>
}

const keyIdPattern = /^[A-Za-z0-9_-]{1,64}$/
const base64Pattern = /^(?:[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+)$/

/** A short, stable, non-reversible name for a key: the first 48 bits of HMAC-SHA256(key, "altan:key-id"). */
const fingerprint = (key: KeyObject) => createHmac("sha256", key).update("altan:key-id").digest("hex").slice(0, 12)

/** Parses `base64` or `id:base64` of 32 bytes; the error names the problem, never the key. */
const parseMasterKey = (text: string): Either.Either<MasterKey, string> => {
  const trimmed = text.trim()
  const colon = trimmed.indexOf(":")
  const id = colon < 0 ? undefined : trimmed.slice(0, colon)
  const encoded = colon < 0 ? trimmed : trimmed.slice(colon + 1)
  if (id !== undefined && !keyIdPattern.test(id)) {
    return Either.left("the key id before \":\" must be 1 to 64 letters, digits, _ or -")
  }
  if (!base64Pattern.test(encoded)) {
    return Either.left(
      "must be base64 of 32 random bytes (`openssl rand -base64 32`), optionally prefixed with \"<id>:\""
    )
  }
  const bytes = Buffer.from(encoded, encoded.includes("-") || encoded.includes("_") ? "base64url" : "base64")
  if (bytes.length !== 32) {
    return Either.left(
      `must decode to 32 bytes (AES-256), got ${bytes.length}; generate one with \`openssl rand -base64 32\``
    )
  }
  const key = createSecretKey(bytes)
  bytes.fill(0)
  return Either.right({ id: id ?? fingerprint(key), key })
}

/**
 * Builds a key ring from `[id:]base64` texts (the format of `SECRETS_MASTER_KEY` and of each entry of
 * `SECRETS_MASTER_KEYS_PREVIOUS`). Fails with a message that never contains key material.
 */
export const makeMasterKeyRing = (
  current: string,
  previous: ReadonlyArray<string> = []
): Either.Either<MasterKeyRing, string> =>
  Either.gen(function*() {
    const head = yield* Either.mapLeft(parseMasterKey(current), (e) => `SECRETS_MASTER_KEY ${e}`)
    const rest: Array<MasterKey> = []
    for (const [i, text] of previous.entries()) {
      rest.push(yield* Either.mapLeft(parseMasterKey(text), (e) => `SECRETS_MASTER_KEYS_PREVIOUS entry ${i + 1} ${e}`))
    }
    const ids = [head, ...rest].map((k) => k.id)
    const duplicate = ids.find((id, i) => ids.indexOf(id) !== i)
    if (duplicate !== undefined) return yield* Either.left(`master key id "${duplicate}" is used twice`)
    return { current: head, previous: rest }
  })

/**
 * `SECRETS_MASTER_KEY` (the current master key, base64 of 32 bytes or `id:base64`) and
 * `SECRETS_MASTER_KEYS_PREVIOUS` (comma-separated older keys, still accepted to unwrap data keys).
 */
export const masterKeysConfig: Config.Config<MasterKeyRing> = Config.all({
  current: Config.redacted("SECRETS_MASTER_KEY").pipe(
    Config.withDescription("Current master key wrapping the tenants' data keys: base64 of 32 bytes, or id:base64.")
  ),
  previous: Config.redacted("SECRETS_MASTER_KEYS_PREVIOUS").pipe(
    Config.withDefault(Redacted.make("")),
    Config.withDescription("Comma-separated older master keys, still accepted to unwrap data keys during a rotation.")
  )
}).pipe(
  Config.mapOrFail(({ current, previous }) =>
    Either.mapLeft(
      makeMasterKeyRing(
        Redacted.value(current),
        Redacted.value(previous).split(",").map((s) => s.trim()).filter((s) => s !== "")
      ),
      (message) => ConfigError.InvalidData([], message)
    )
  )
)

/** `v1.<keyId>.<iv>.<ciphertext>.<tag>`, base64url parts: AES-256-GCM with a 96-bit IV and a 128-bit tag. */
interface Sealed {
  readonly keyId: string
  readonly iv: Buffer
  readonly ciphertext: Buffer
  readonly tag: Buffer
}

const seal = (key: KeyObject, keyId: string, plaintext: Uint8Array, associatedData: string): string => {
  const iv = randomBytes(12)
  const cipher = createCipheriv("aes-256-gcm", key, iv)
  cipher.setAAD(Buffer.from(associatedData, "utf8"))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return ["v1", keyId, ...[iv, ciphertext, cipher.getAuthTag()].map((b) => b.toString("base64url"))].join(".")
}

const parseSealed = (blob: string): Option.Option<Sealed> => {
  const parts = blob.split(".")
  if (parts.length !== 5 || parts[0] !== "v1" || !keyIdPattern.test(parts[1]!)) return Option.none()
  if (!parts.slice(2).every((p) => /^[A-Za-z0-9_-]*$/.test(p))) return Option.none()
  const [iv, ciphertext, tag] = parts.slice(2).map((p) => Buffer.from(p, "base64url"))
  if (iv!.length !== 12 || tag!.length !== 16) return Option.none()
  return Option.some({ keyId: parts[1]!, iv: iv!, ciphertext: ciphertext!, tag: tag! })
}

/** The plaintext, or none when the key, the associated data or the bytes do not authenticate. */
const open = (key: KeyObject, sealed: Sealed, associatedData: string): Option.Option<Buffer> => {
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, sealed.iv)
    decipher.setAAD(Buffer.from(associatedData, "utf8"))
    decipher.setAuthTag(sealed.tag)
    return Option.some(Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]))
  } catch {
    return Option.none()
  }
}

/** A tenant's data key, unwrapped. */
interface DataKey {
  readonly id: string
  readonly key: KeyObject
}

const dataKeyAad = (tenantId: string) => `altan:v1:dek\u0000${tenantId}`
const secretAad = (tenantId: string, name: string) => `altan:v1:${tenantId}\u0000${name}`

const newDataKey = (): { readonly dataKey: DataKey; readonly bytes: Buffer } => {
  const bytes = randomBytes(32)
  const key = createSecretKey(bytes)
  return { dataKey: { id: fingerprint(key), key }, bytes }
}

const wrapDataKey = (ring: MasterKeyRing, tenantId: string, bytes: Buffer) =>
  seal(ring.current.key, ring.current.id, bytes, dataKeyAad(tenantId))

/** Unwraps with the master key the blob names first, then every other key of the ring; fails closed. */
const unwrapDataKey = (
  ring: MasterKeyRing,
  tenantId: string,
  blob: string
): Either.Either<DataKey, SecretStoreError> => {
  const fail = (reason: string) =>
    Either.left(new SecretStoreError({ message: `cannot unwrap the data key of tenant ${tenantId}: ${reason}` }))
  const sealed = parseSealed(blob)
  if (Option.isNone(sealed)) return fail("the stored data key is malformed")
  const keys = [ring.current, ...ring.previous]
  const ordered = [
    ...keys.filter((k) => k.id === sealed.value.keyId),
    ...keys.filter((k) => k.id !== sealed.value.keyId)
  ]
  for (const master of ordered) {
    const bytes = open(master.key, sealed.value, dataKeyAad(tenantId))
    if (Option.isSome(bytes)) {
      if (bytes.value.length !== 32) return fail("the stored data key has a wrong length")
      const key = createSecretKey(bytes.value)
      bytes.value.fill(0)
      return Either.right({ id: fingerprint(key), key })
    }
  }
  return fail(
    `wrong or missing master key (it was wrapped by master key "${sealed.value.keyId}"; this process has ${
      keys.map((k) => `"${k.id}"`).join(", ")
    }: set SECRETS_MASTER_KEY or SECRETS_MASTER_KEYS_PREVIOUS)`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------------------------

/** Options of `layerRedis` and `rewrapDataKeys`. */
export interface RedisOptions {
  /** Key prefix, `altan` by default: `<prefix>:t:<tenant>:secrets` and `<prefix>:t:<tenant>:dek`. */
  readonly prefix?: string
  readonly masterKeys: MasterKeyRing
}

const redisCommand = <A>(command: string, f: () => Promise<A>): Effect.Effect<A, SecretStoreError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) => new SecretStoreError({ message: `secret store: redis ${command} failed: ${errorMessage(cause)}` })
  })

const redisKeys = (options: RedisOptions) => {
  const prefix = options.prefix ?? "altan"
  if (!/^[^\s{}*?[\]\\]+$/.test(prefix)) {
    throw new Error(`redis key prefix must be non-empty, without spaces, braces or glob characters: "${prefix}"`)
  }
  return {
    prefix,
    secrets: (tenantId: string) => `${prefix}:t:${tenantId}:secrets`,
    dataKey: (tenantId: string) => `${prefix}:t:${tenantId}:dek`
  }
}

/**
 * Secrets in the process's Redis under envelope encryption. Each tenant has a random 256-bit data key, stored wrapped
 * (AES-256-GCM) by the operator's current master key at `<prefix>:t:<tenant>:dek`; each secret is sealed
 * with it (AES-256-GCM, fresh 96-bit IV, associated data binding tenant and name) into the hash
 * `<prefix>:t:<tenant>:secrets`. Redis never holds a plaintext value or an unwrapped key; a ciphertext
 * moved to another slot, or a master key that does not match, fails closed with `SecretStoreError`.
 */
export const layerRedis = (options: RedisOptions): Layer.Layer<SecretStore, SecretStoreError, Redis> =>
  Layer.effect(
    SecretStore,
    Effect.gen(function*() {
      const keys = yield* Effect.try({
        try: () => redisKeys(options),
        catch: (cause) => new SecretStoreError({ message: errorMessage(cause) })
      })
      const { client } = yield* Redis
      const ring = options.masterKeys
      // Unwrapped data keys of this process; a rewrap changes their wrapping, never the keys themselves.
      const dataKeys = new Map<string, DataKey>()

      const unwrap = (tenantId: TenantId, blob: string) =>
        Effect.tap(unwrapDataKey(ring, tenantId, blob), (dataKey) => Effect.sync(() => dataKeys.set(tenantId, dataKey)))

      const readDataKey = (tenantId: TenantId): Effect.Effect<Option.Option<DataKey>, SecretStoreError> =>
        Effect.suspend(() => {
          const known = dataKeys.get(tenantId)
          if (known) return Effect.succeedSome(known)
          return redisCommand("GET", () => client.get(keys.dataKey(tenantId))).pipe(
            Effect.flatMap((blob) => blob === null ? Effect.succeedNone : Effect.asSome(unwrap(tenantId, blob)))
          )
        })

      /** The tenant's data key, created on first use; `SET NX` makes concurrent creators agree on one. */
      const dataKeyFor = (tenantId: TenantId): Effect.Effect<DataKey, SecretStoreError> =>
        Effect.flatMap(readDataKey(tenantId), (existing) => {
          if (Option.isSome(existing)) return Effect.succeed(existing.value)
          const { bytes, dataKey } = newDataKey()
          const wrapped = wrapDataKey(ring, tenantId, bytes)
          bytes.fill(0)
          return redisCommand("SET", () => client.set(keys.dataKey(tenantId), wrapped, "NX")).pipe(
            Effect.flatMap((set) =>
              set === "OK"
                ? Effect.sync(() => {
                  dataKeys.set(tenantId, dataKey)
                  return dataKey
                })
                : redisCommand("GET", () => client.get(keys.dataKey(tenantId))).pipe(
                  Effect.flatMap((blob) =>
                    blob === null
                      ? new SecretStoreError({ message: `the data key of tenant ${tenantId} vanished while created` })
                      : unwrap(tenantId, blob)
                  )
                )
            )
          )
        })

      const decrypt = (tenantId: TenantId, name: string, blob: string) =>
        Effect.gen(function*() {
          const fail = (reason: string) =>
            new SecretStoreError({ message: `cannot decrypt secret "${name}" of tenant ${tenantId}: ${reason}` })
          const sealed = parseSealed(blob)
          if (Option.isNone(sealed)) return yield* fail("the stored ciphertext is malformed")
          const dataKey = yield* readDataKey(tenantId)
          if (Option.isNone(dataKey)) return yield* fail("the tenant has no data key")
          if (sealed.value.keyId !== dataKey.value.id) {
            return yield* fail(`it was sealed with another data key ("${sealed.value.keyId}")`)
          }
          const plaintext = open(dataKey.value.key, sealed.value, secretAad(tenantId, name))
          if (Option.isNone(plaintext)) {
            return yield* fail("the ciphertext does not authenticate (altered, or moved from another tenant or name)")
          }
          const value = plaintext.value.toString("utf8")
          plaintext.value.fill(0)
          return Redacted.make(value)
        })

      return traced("redis", {
        get: (tenantId, name) =>
          redisCommand("HGET", () => client.hget(keys.secrets(tenantId), name)).pipe(
            Effect.flatMap((blob) => blob === null ? Effect.succeedNone : Effect.asSome(decrypt(tenantId, name, blob)))
          ),
        put: (tenantId, name, value) =>
          Effect.gen(function*() {
            const dataKey = yield* dataKeyFor(tenantId)
            const plaintext = Buffer.from(Redacted.value(value), "utf8")
            const blob = seal(dataKey.key, dataKey.id, plaintext, secretAad(tenantId, name))
            plaintext.fill(0)
            yield* redisCommand("HSET", () => client.hset(keys.secrets(tenantId), name, blob))
          }),
        delete: (tenantId, name) =>
          redisCommand("HDEL", () => client.hdel(keys.secrets(tenantId), name)).pipe(Effect.map((n) => n > 0))
      })
    })
  )

/** What `rewrapDataKeys` did. */
export interface RewrapResult {
  /** Data keys now wrapped by the current master key that were wrapped by an older one. */
  readonly rewrapped: number
  /** Data keys already wrapped by the current master key. */
  readonly unchanged: number
}

// Replaces the wrapped key only if nobody changed it since it was read.
const compareAndSet =
  `if redis.call("GET", KEYS[1]) == ARGV[1] then redis.call("SET", KEYS[1], ARGV[2]) return 1 end return 0`

/**
 * Re-wraps every tenant's data key under the current master key (`masterKeys.current`), unwrapping with
 * any key of the ring. Secret ciphertexts are not touched: after it has run, the previous master keys can
 * be retired. Idempotent and safe to run while runners serve; a data key that no key of the ring unwraps
 * fails it (the ones done so far stay done).
 */
export const rewrapDataKeys = (options: RedisOptions): Effect.Effect<RewrapResult, SecretStoreError, Redis> =>
  Effect.gen(function*() {
    const keys = yield* Effect.try({
      try: () => redisKeys(options),
      catch: (cause) => new SecretStoreError({ message: errorMessage(cause) })
    })
    const { client } = yield* Redis
    const ring = options.masterKeys
    const head = `${keys.prefix}:t:`
    let rewrapped = 0
    let unchanged = 0

    const rewrap = (key: string, attempt: number): Effect.Effect<void, SecretStoreError> =>
      Effect.gen(function*() {
        const tenantId = key.slice(head.length, -":dek".length)
        const blob = yield* redisCommand("GET", () => client.get(key))
        if (blob === null) return
        if (Option.exists(parseSealed(blob), (s) => s.keyId === ring.current.id)) {
          unchanged++
          return
        }
        const dataKey = yield* unwrapDataKey(ring, tenantId, blob)
        const bytes = dataKey.key.export()
        const wrapped = wrapDataKey(ring, tenantId, bytes)
        bytes.fill(0)
        const set = yield* redisCommand("EVAL", () => client.eval(compareAndSet, 1, key, blob, wrapped))
        if (set === 1) rewrapped++
        else if (attempt < 3) yield* rewrap(key, attempt + 1)
        else {return yield* new SecretStoreError({
            message: `the data key at ${key} keeps changing; run the rewrap again`
          })}
      })

    let cursor = "0"
    do {
      const [next, found] = yield* redisCommand(
        "SCAN",
        () => client.scan(cursor, "MATCH", `${keys.prefix}:t:*:dek`, "COUNT", 500)
      )
      cursor = next
      // `*` also spans colons: only `<prefix>:t:<tenant>:dek`, never another store's key that happens to end so
      for (const key of found) if (!key.slice(head.length, -":dek".length).includes(":")) yield* rewrap(key, 0)
    } while (cursor !== "0")
    return { rewrapped, unchanged }
  }).pipe(
    Effect.withSpan("SecretStore.rewrapDataKeys", {
      attributes: { "altan.master_key_id": options.masterKeys.current.id },
      captureStackTrace: false
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// Google Secret Manager
// ---------------------------------------------------------------------------------------------------------------

/** Options of the `SecretManagerServiceClient` (credentials, endpoint, `fallback: true` for HTTP/JSON...). */
export type GcpClientOptions = NonNullable<ConstructorParameters<typeof SecretManagerServiceClient>[0]>

/** Options of `layerGcp`. */
export interface GcpOptions {
  /** The Google Cloud project holding the secrets. */
  readonly projectId: string
  /** Client options; by default Application Default Credentials and `secretmanager.googleapis.com`. */
  readonly client?: GcpClientOptions
}

const sha256Hex = (text: string) => createHash("sha256").update(text, "utf8").digest("hex")

/** Letters and digits as they are, every other UTF-8 byte as `_xx`: injective, and never a `-`. */
const escapeSegment = (text: string) =>
  Array.from(
    Buffer.from(text, "utf8"),
    (b) =>
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
        ? String.fromCharCode(b)
        : `_${b.toString(16).padStart(2, "0")}`
  ).join("")

/**
 * The Secret Manager secret id of a tenant's secret: `altan-<tenant>-<name>`, each part escaped (letters and
 * digits kept, any other byte as `_xx`), so distinct (tenant, name) pairs never share an id. When that is
 * longer than the 255 characters an id allows: `altan_<sha256 hex of tenant NUL name>`.
 */
export const gcpSecretId = (tenantId: string, name: string): string => {
  const readable = `altan-${escapeSegment(tenantId)}-${escapeSegment(name)}`
  return readable.length <= 255 ? readable : `altan_${sha256Hex(`${tenantId}\u0000${name}`)}`
}

/** A label value naming the tenant: the id itself when label-safe, else a lowercased form with a hash suffix. */
export const gcpTenantLabel = (tenantId: string): string => {
  if (/^[a-z0-9_-]{1,63}$/.test(tenantId)) return tenantId
  const safe = tenantId.toLowerCase().replace(/[^a-z0-9_-]/g, "_").slice(0, 54)
  return `${safe}-${sha256Hex(tenantId).slice(0, 8)}`
}

/** gRPC status codes the store tells apart. */
const NOT_FOUND = 5
const ALREADY_EXISTS = 6

const statusOf = (cause: unknown) =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "number"
    ? cause.code
    : undefined

/** A failed call and its gRPC status code. */
interface GcpFailure {
  readonly status: number | undefined
  readonly error: SecretStoreError
}

/** The failure without the request (it may hold the value): Secret Manager's status and message, shortened. */
const gcpError = (operation: string, resource: string, cause: unknown) =>
  new SecretStoreError({
    message: `secret manager ${operation} of ${resource} failed: ${errorMessage(cause).slice(0, 300)}`,
    cause: { code: statusOf(cause) }
  })

const callOptions = { timeout: 15_000 }

/**
 * Secrets in Google Secret Manager: one secret per tenant and name (`gcpSecretId`), labelled
 * `altan-tenant`, with automatic replication; `put` adds a version, `get` reads the latest, `delete`
 * deletes the secret with all its versions.
 */
export const layerGcp = (options: GcpOptions): Layer.Layer<SecretStore, SecretStoreError> =>
  Layer.scoped(
    SecretStore,
    Effect.gen(function*() {
      // Loaded on first use: processes with another backend never load gax, gRPC and protobuf.
      const { SecretManagerServiceClient } = yield* Effect.promise(() => import("@google-cloud/secret-manager"))
      const client = yield* Effect.acquireRelease(
        Effect.try({
          try: () => new SecretManagerServiceClient(options.client),
          catch: (cause) =>
            new SecretStoreError({ message: `cannot create the secret manager client: ${errorMessage(cause)}` })
        }),
        (client) => Effect.promise(() => client.close().catch(() => undefined))
      )
      const project = `projects/${options.projectId}`
      const secretName = (tenantId: TenantId, name: string) => `${project}/secrets/${gcpSecretId(tenantId, name)}`

      /** A call whose failure keeps its status, to tell "not found" apart before it becomes a `SecretStoreError`. */
      const call = <A>(operation: string, resource: string, f: () => Promise<A>): Effect.Effect<A, GcpFailure> =>
        Effect.tryPromise({
          try: f,
          catch: (cause) => ({ status: statusOf(cause), error: gcpError(operation, resource, cause) })
        })
      const orFail = Effect.mapError((e: GcpFailure) => e.error)
      const addVersion = (parent: string, data: Buffer) =>
        call("addSecretVersion", parent, () => client.addSecretVersion({ parent, payload: { data } }, callOptions))

      return traced("gcp", {
        get: (tenantId, name) => {
          const version = `${secretName(tenantId, name)}/versions/latest`
          return call("accessSecretVersion", version, () => client.accessSecretVersion({ name: version }, callOptions))
            .pipe(
              Effect.flatMap(([response]): Effect.Effect<Option.Option<Redacted.Redacted>, GcpFailure> => {
                const data = response.payload?.data
                return data === null || data === undefined
                  ? Effect.fail({
                    status: undefined,
                    error: new SecretStoreError({ message: `secret manager returned no payload for ${version}` })
                  })
                  : Effect.succeedSome(Redacted.make(decodePayload(data)))
              }),
              Effect.catchIf((e) => e.status === NOT_FOUND, () => Effect.succeedNone),
              orFail
            )
        },
        put: (tenantId, name, value) =>
          Effect.gen(function*() {
            const parent = secretName(tenantId, name)
            const data = Buffer.from(Redacted.value(value), "utf8")
            const added = yield* Effect.either(addVersion(parent, data))
            if (Either.isRight(added)) return
            if (added.left.status !== NOT_FOUND) return yield* Effect.fail(added.left.error)
            const secretId = gcpSecretId(tenantId, name)
            yield* call("createSecret", parent, () =>
              client.createSecret({
                parent: project,
                secretId,
                secret: {
                  replication: { automatic: {} },
                  labels: { "altan-tenant": gcpTenantLabel(tenantId) },
                  annotations: { "altan-tenant-id": tenantId, "altan-secret-name": name }
                }
              }, callOptions)).pipe(
                Effect.catchIf((e) => e.status === ALREADY_EXISTS, () => Effect.void),
                orFail
              )
            yield* orFail(addVersion(parent, data))
          }),
        delete: (tenantId, name) => {
          const secret = secretName(tenantId, name)
          return call("deleteSecret", secret, () => client.deleteSecret({ name: secret }, callOptions)).pipe(
            Effect.as(true),
            Effect.catchIf((e) => e.status === NOT_FOUND, () => Effect.succeed(false)),
            orFail
          )
        }
      })
    })
  )

const decodePayload = (data: Uint8Array | string) =>
  typeof data === "string" ? Buffer.from(data, "base64").toString("utf8") : Buffer.from(data).toString("utf8")

// ---------------------------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------------------------

/** Options of `withCache`. */
export interface CacheOptions {
  /** Most entries kept; past it, expired ones go first, then the oldest. 10 000 by default. */
  readonly capacity?: number
}

/**
 * A per-process cache in front of a store: answers (found and not found) are kept `ttl`; this process's own
 * `put` and `delete` drop the entry at once, other processes' writes show after at most `ttl`. Failures are
 * never cached. A zero `ttl` leaves the store as it is.
 */
export const withCache =
  (ttl: Duration.DurationInput, options?: CacheOptions) =>
  <E, R>(self: Layer.Layer<SecretStore, E, R>): Layer.Layer<SecretStore, E, R> => {
    if (!(Duration.toMillis(ttl) > 0)) return self
    return Layer.effect(
      SecretStore,
      Effect.map(SecretStore, (store): SecretStore["Type"] => {
        const cache = makeReadCache<Option.Option<Redacted.Redacted>>(ttl, options?.capacity)
        const keyOf = (tenantId: TenantId, name: string) => `${tenantId}\u0000${name}`
        return {
          // the runtime's own entries (OAuth2 tokens, rotated by their actor, which may move between
          // runners) are always read fresh: a stale refresh token would cost the connection its grant
          get: (tenantId, name) =>
            isReservedSecretName(name)
              ? store.get(tenantId, name)
              : cache.read(keyOf(tenantId, name), store.get(tenantId, name)),
          put: (tenantId, name, value) => cache.write(keyOf(tenantId, name), store.put(tenantId, name, value)),
          delete: (tenantId, name) => cache.write(keyOf(tenantId, name), store.delete(tenantId, name))
        }
      })
    ).pipe(Layer.provide(self))
  }

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

/** Where tenant secrets live, as configured by the environment (`loadConfig`). */
export type SecretStoreConfig =
  /** `SECRETS_BACKEND=memory` (the default): process memory, lost on restart, not shared between runners. */
  | { readonly backend: "memory" }
  /** `SECRETS_BACKEND=redis`: envelope-encrypted in the `REDIS_URL` Redis; needs `SECRETS_MASTER_KEY`. */
  | { readonly backend: "redis"; readonly masterKeys: MasterKeyRing; readonly cacheTtl: Duration.Duration }
  /** `SECRETS_BACKEND=gcp`: Google Secret Manager of `GCP_PROJECT` (or `GOOGLE_CLOUD_PROJECT`). */
  | { readonly backend: "gcp"; readonly projectId: string; readonly cacheTtl: Duration.Duration }

export const defaults = {
  /** Memory unless chosen explicitly: a Redis or GCP store needs keys or credentials an operator provides. */
  backend: "memory",
  cacheTtl: Duration.seconds(30)
} as const

const backendConfig = Config.literal("memory", "redis", "gcp")("SECRETS_BACKEND").pipe(
  Config.withDefault(defaults.backend),
  Config.withDescription("Where tenant secrets live: memory (default), redis (needs REDIS_URL) or gcp.")
)

const cacheTtlConfig = Config.duration("SECRETS_CACHE_TTL").pipe(
  Config.withDefault(defaults.cacheTtl),
  Config.withDescription("How long a process caches secrets read from redis or gcp, e.g. `30 seconds`; 0 disables.")
)

const gcpProjectConfig = Config.nonEmptyString("GCP_PROJECT").pipe(
  Config.orElse(() => Config.nonEmptyString("GOOGLE_CLOUD_PROJECT")),
  Config.withDescription("Google Cloud project of the Secret Manager secrets (GCP_PROJECT or GOOGLE_CLOUD_PROJECT).")
)

/**
 * Reads `SECRETS_BACKEND` and what the chosen backend needs: `SECRETS_MASTER_KEY` /
 * `SECRETS_MASTER_KEYS_PREVIOUS` for redis, `GCP_PROJECT` / `GOOGLE_CLOUD_PROJECT` for gcp, and
 * `SECRETS_CACHE_TTL` for both.
 */
export const loadConfig: Effect.Effect<SecretStoreConfig, ConfigError.ConfigError> = Effect.gen(function*() {
  const backend = yield* backendConfig
  switch (backend) {
    case "memory":
      return { backend }
    case "redis":
      return { backend, masterKeys: yield* masterKeysConfig, cacheTtl: yield* cacheTtlConfig }
    case "gcp":
      return { backend, projectId: yield* gcpProjectConfig, cacheTtl: yield* cacheTtlConfig }
  }
})

/**
 * The `SecretStore` the environment asks for (`loadConfig`); `redis` is the process's Redis when `REDIS_URL` is
 * set, which the redis backend requires. Remote stores come with `withCache(SECRETS_CACHE_TTL)`.
 */
export const layerFromConfig = <E = never, R = never>(
  redis: Option.Option<Layer.Layer<Redis, E, R>>
): Layer.Layer<SecretStore, ConfigError.ConfigError | SecretStoreError | E, R> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const config = yield* loadConfig
    switch (config.backend) {
      case "memory": {
        if (Option.isSome(redis)) {
          yield* Effect.logWarning(
            "tenant secrets are kept in process memory (SECRETS_BACKEND=memory): they are lost on restart and not " +
              "shared between runners; set SECRETS_BACKEND=redis and SECRETS_MASTER_KEY"
          )
        }
        return layerMemory
      }
      case "redis": {
        if (Option.isNone(redis)) {
          return yield* Effect.fail(ConfigError.MissingData(["REDIS_URL"], "SECRETS_BACKEND=redis needs REDIS_URL"))
        }
        yield* Effect.logInfo(
          `tenant secrets in redis, data keys wrapped by master key "${config.masterKeys.current.id}"` +
            (config.masterKeys.previous.length > 0
              ? ` (also unwrapping with ${config.masterKeys.previous.map((k) => `"${k.id}"`).join(", ")})`
              : "")
        )
        return layerRedis({ masterKeys: config.masterKeys }).pipe(
          Layer.provide(redis.value),
          withCache(config.cacheTtl)
        )
      }
      case "gcp": {
        yield* Effect.logInfo(`tenant secrets in google secret manager, project ${config.projectId}`)
        return layerGcp({ projectId: config.projectId }).pipe(withCache(config.cacheTtl))
      }
    }
  }))
