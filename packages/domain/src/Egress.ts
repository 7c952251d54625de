import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { TaggedError } from "./TaggedError.js"

/** Methods an outbound call may use. */
export type EgressMethod = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"

/** One outbound HTTP call. */
export interface EgressRequest {
  /** `http:` or `https:` only, without userinfo. */
  readonly url: string
  readonly method: EgressMethod
  readonly headers?: Readonly<Record<string, string>> | undefined
  readonly body?: string | Uint8Array | undefined
  /**
   * The tenant's allowlist: `host`, `host:port` or `*.domain` (subdomains only), matched exactly and
   * case-insensitively; `"any-public"` allows every public address. Callers must choose: there is no default.
   */
  readonly allowHosts: ReadonlyArray<string> | "any-public"
  /** Overrides `EgressConfig.totalTimeout` (DNS, connect, headers and body of every hop). */
  readonly timeoutMs?: number | undefined
  /** Overrides `EgressConfig.maxResponseBytes` (applies to both the wire and the decompressed bytes). */
  readonly maxBytes?: number | undefined
  /**
   * Headers that carry a credential beside `Authorization` and `Cookie` (e.g. `X-API-Key`): dropped, like
   * those, when a redirect leaves the origin.
   */
  readonly credentialHeaders?: ReadonlyArray<string> | undefined
  /** `false`: a redirect is the answer, not followed (requests whose body holds a secret). Default `true`. */
  readonly followRedirects?: boolean | undefined
}

/** The response of the last hop; `body` is already decompressed. */
export interface EgressResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: Uint8Array
  /** The final URL, after redirects. */
  readonly url: string
}

/** The call was refused before any connection was attempted. `url` has no query, fragment or userinfo. */
export class EgressDenied extends TaggedError<EgressDenied>()("EgressDenied", {
  message: Schema.String,
  url: Schema.String
}) {
  get code() {
    return "egress_denied" as const
  }
}

/** Why an allowed call failed. */
export const EgressFailureReason = Schema.Literal(
  /** No connection could be made (refused, unreachable, DNS): the request was never sent. */
  "connect",
  "timeout",
  "too_large",
  "network",
  "too_many_redirects",
  "bad_response"
)
export type EgressFailureReason = typeof EgressFailureReason.Type

/** The call was allowed but did not produce a usable response; `retryable` for network errors and timeouts. */
export class EgressFailed extends TaggedError<EgressFailed>()("EgressFailed", {
  reason: EgressFailureReason,
  retryable: Schema.Boolean,
  message: Schema.String,
  url: Schema.String
}) {
  get code() {
    return "egress_failed" as const
  }
}

/** The one HTTP client every outbound call goes through: SSRF checks, pinned connections, timeouts, size caps. */
export class Egress extends Context.Tag("@altan/domain/Egress")<Egress, {
  readonly request: (req: EgressRequest) => Effect.Effect<EgressResponse, EgressDenied | EgressFailed>
}>() {}
