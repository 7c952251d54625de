import { errorMessage } from "@altan/domain/Errors"
import type { TenantId } from "@altan/domain/Ids"
import type { SecretManagerServiceClient } from "@google-cloud/secret-manager"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { createHash } from "node:crypto"
import { SecretStore, SecretStoreError, traced } from "./SecretStore.js"

/** Options of the `SecretManagerServiceClient` (credentials, endpoint, `fallback: true` for HTTP/JSON...). */
export type GcpClientOptions = NonNullable<ConstructorParameters<typeof SecretManagerServiceClient>[0]>

/** Options of `layer`. */
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
export const layer = (options: GcpOptions): Layer.Layer<SecretStore, SecretStoreError> =>
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
