import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, type KeyObject, randomBytes } from "node:crypto"
import { SecretStoreError } from "../SecretStore.js"

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

export const seal = (key: KeyObject, keyId: string, plaintext: Uint8Array, associatedData: string): string => {
  const iv = randomBytes(12)
  const cipher = createCipheriv("aes-256-gcm", key, iv)
  cipher.setAAD(Buffer.from(associatedData, "utf8"))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return ["v1", keyId, ...[iv, ciphertext, cipher.getAuthTag()].map((b) => b.toString("base64url"))].join(".")
}

export const parseSealed = (blob: string): Option.Option<Sealed> => {
  const parts = blob.split(".")
  if (parts.length !== 5 || parts[0] !== "v1" || !keyIdPattern.test(parts[1]!)) return Option.none()
  if (!parts.slice(2).every((p) => /^[A-Za-z0-9_-]*$/.test(p))) return Option.none()
  const [iv, ciphertext, tag] = parts.slice(2).map((p) => Buffer.from(p, "base64url"))
  if (iv!.length !== 12 || tag!.length !== 16) return Option.none()
  return Option.some({ keyId: parts[1]!, iv: iv!, ciphertext: ciphertext!, tag: tag! })
}

/** The plaintext, or none when the key, the associated data or the bytes do not authenticate. */
export const open = (key: KeyObject, sealed: Sealed, associatedData: string): Option.Option<Buffer> => {
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
export interface DataKey {
  readonly id: string
  readonly key: KeyObject
}

const dataKeyAad = (tenantId: string) => `altan:v1:dek\u0000${tenantId}`
export const secretAad = (tenantId: string, name: string) => `altan:v1:${tenantId}\u0000${name}`

export const newDataKey = (): { readonly dataKey: DataKey; readonly bytes: Buffer } => {
  const bytes = randomBytes(32)
  const key = createSecretKey(bytes)
  return { dataKey: { id: fingerprint(key), key }, bytes }
}

export const wrapDataKey = (ring: MasterKeyRing, tenantId: string, bytes: Buffer) =>
  seal(ring.current.key, ring.current.id, bytes, dataKeyAad(tenantId))

/** Unwraps with the master key the blob names first, then every other key of the ring; fails closed. */
export const unwrapDataKey = (
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
