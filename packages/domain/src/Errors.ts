import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/** Extra, machine-readable facts about an error, e.g. `{ "field": "input.steps.0.id" }`. */
export const ErrorDetails = Schema.Record({ key: Schema.String, value: Schema.Unknown })
export type ErrorDetails = typeof ErrorDetails.Type

/** The body of every non-2xx answer: `{"error": {"code", "message", "details"?}}`. */
export const ErrorBody = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  details: Schema.optional(ErrorDetails)
})
export type ErrorBody = typeof ErrorBody.Type

const fields = (code: string) => ({
  code: Schema.optionalWith(Schema.String, { default: () => code }),
  message: Schema.String,
  details: Schema.optional(ErrorDetails)
})

/*
 * Each error's `static is` tests its tag, in the manner of `@effect/cluster`'s `ClusterError`: the tag alone, as the
 * checks it replaces did (an error decoded from the wire is an instance of its class all the same).
 */

/** 400: the request is malformed; `details.field` names the offending field. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", fields("invalid_request")) {
  static is(u: unknown): u is InvalidRequest {
    return Predicate.isTagged(u, "InvalidRequest")
  }
}
/** 401: missing, malformed, expired or untrusted token. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", fields("invalid_token")) {
  static is(u: unknown): u is Unauthorized {
    return Predicate.isTagged(u, "Unauthorized")
  }
}
/** 403: authenticated, but the role may not do this. */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", fields("forbidden")) {
  static is(u: unknown): u is Forbidden {
    return Predicate.isTagged(u, "Forbidden")
  }
}
/** 404: absent, or another tenant's (never revealed). */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", fields("not_found")) {
  static is(u: unknown): u is NotFound {
    return Predicate.isTagged(u, "NotFound")
  }
}
/** 409: the object is not in a state that allows this. */
export class Conflict extends Schema.TaggedError<Conflict>()("Conflict", fields("conflict")) {
  static is(u: unknown): u is Conflict {
    return Predicate.isTagged(u, "Conflict")
  }
}
/** 413: the request body is over the limit. */
export class PayloadTooLarge
  extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", fields("payload_too_large"))
{
  static is(u: unknown): u is PayloadTooLarge {
    return Predicate.isTagged(u, "PayloadTooLarge")
  }
}
/** 503: the runtime cannot take the request right now (cluster mailbox full, storage down). */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", fields("unavailable")) {
  static is(u: unknown): u is Unavailable {
    return Predicate.isTagged(u, "Unavailable")
  }
}

/** 429: over a rate or concurrency limit; `details.retry_after_ms` says when to try again (also `Retry-After`). */
export class TooManyRequests extends Schema.TaggedError<TooManyRequests>()("TooManyRequests", fields("rate_limited")) {
  static is(u: unknown): u is TooManyRequests {
    return Predicate.isTagged(u, "TooManyRequests")
  }
}

/** 502: an upstream (a provider's token endpoint, a vendor API) answered with an error or garbage. */
export class UpstreamFailed extends Schema.TaggedError<UpstreamFailed>()("UpstreamFailed", fields("upstream_failed")) {
  static is(u: unknown): u is UpstreamFailed {
    return Predicate.isTagged(u, "UpstreamFailed")
  }
}

type WireError = { readonly code: string; readonly message: string; readonly details?: ErrorDetails | undefined }

/**
 * The HTTP encoding of a wire error: the error envelope of API.md with the given status.
 * Over RPC the same classes travel in their tagged form.
 */
export const httpError = <A extends WireError, I, R>(
  error: Schema.Schema<A, I, R> & { new(props: ErrorBody): A },
  status: number
): Schema.Schema<A, { readonly error: ErrorBody }> =>
  Schema.transform(Schema.Struct({ error: ErrorBody }), Schema.typeSchema(error), {
    strict: false,
    decode: ({ error: body }) => new error(body),
    encode: (e) => ({
      error: e.details === undefined
        ? { code: e.code, message: e.message }
        : { code: e.code, message: e.message, details: e.details }
    })
  }).annotations(HttpApiSchema.annotations({ status }))

export const InvalidRequestHttp = httpError(InvalidRequest, 400)
export const UnauthorizedHttp = httpError(Unauthorized, 401)
export const ForbiddenHttp = httpError(Forbidden, 403)
export const NotFoundHttp = httpError(NotFound, 404)
export const ConflictHttp = httpError(Conflict, 409)
export const PayloadTooLargeHttp = httpError(PayloadTooLarge, 413)
export const UnavailableHttp = httpError(Unavailable, 503)
export const UpstreamFailedHttp = httpError(UpstreamFailed, 502)
export const TooManyRequestsHttp = httpError(TooManyRequests, 429)

/** The message of something thrown or rejected, which need not be an `Error`. */
export const errorMessage = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))
