import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as Schema from "effect/Schema"
import { TaggedError } from "./TaggedError.js"

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

// Each error has `static is` (see `TaggedError`).

/** 400: the request is malformed; `details.field` names the offending field. */
export class InvalidRequest extends TaggedError<InvalidRequest>()("InvalidRequest", fields("invalid_request")) {}
/** 401: missing, malformed, expired or untrusted token. */
export class Unauthorized extends TaggedError<Unauthorized>()("Unauthorized", fields("invalid_token")) {}
/** 403: authenticated, but the role may not do this. */
export class Forbidden extends TaggedError<Forbidden>()("Forbidden", fields("forbidden")) {}
/** 404: absent, or another tenant's (never revealed). */
export class NotFound extends TaggedError<NotFound>()("NotFound", fields("not_found")) {}
/** 409: the object is not in a state that allows this. */
export class Conflict extends TaggedError<Conflict>()("Conflict", fields("conflict")) {}
/** 413: the request body is over the limit. */
export class PayloadTooLarge extends TaggedError<PayloadTooLarge>()("PayloadTooLarge", fields("payload_too_large")) {}
/** 503: the runtime cannot take the request right now (cluster mailbox full, storage down). */
export class Unavailable extends TaggedError<Unavailable>()("Unavailable", fields("unavailable")) {}

/** 429: over a rate or concurrency limit; `details.retry_after_ms` says when to try again (also `Retry-After`). */
export class TooManyRequests extends TaggedError<TooManyRequests>()("TooManyRequests", fields("rate_limited")) {}

/** 502: an upstream (a provider's token endpoint, a vendor API) answered with an error or garbage. */
export class UpstreamFailed extends TaggedError<UpstreamFailed>()("UpstreamFailed", fields("upstream_failed")) {}

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
