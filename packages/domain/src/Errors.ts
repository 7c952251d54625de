import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as Schema from "effect/Schema"
import { TaggedError } from "./TaggedError.js"

/** Extra, machine-readable facts about an error, e.g. `{ "field": "input.steps.0.id" }`. */
export const ErrorDetails = Schema.Record({ key: Schema.String, value: Schema.Unknown })
export type ErrorDetails = typeof ErrorDetails.Type

/**
 * Every `code` an error answer of the API carries. The error classes take only these, and the edge's own answers
 * (no route, a body that is not JSON) are typed by them: a new code is added here, with its line in `errorCodes`.
 */
export const ErrorCode = Schema.Literal(
  "invalid_request",
  "invalid_json",
  "invalid_plan",
  "invalid_tool",
  "invalid_tool_input",
  "invalid_mcp_server",
  "unknown_tool",
  "unknown_llm",
  "tool_not_allowed",
  "llm_not_configured",
  "egress_denied",
  "invalid_state",
  "authorization_denied",
  "bad_request",
  "invalid_token",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "conflict",
  "task_finished",
  "not_waiting",
  "stale_input_hash",
  "payload_too_large",
  "unsupported_media_type",
  "headers_too_large",
  "rate_limited",
  "internal_error",
  "upstream_failed",
  "unavailable"
)
export type ErrorCode = typeof ErrorCode.Type

/** What each code means, one line each (the README's list and the OpenAPI `Error` schema's description). */
export const errorCodes: { readonly [code in ErrorCode]: string } = {
  invalid_request:
    "400: the request does not match the API's schema, or its body is not JSON; `details.field` names the field",
  invalid_json: "400: the JSON body nests deeper than the limit",
  invalid_plan: "400: a structured plan is inconsistent (duplicate step ids, a cycle, a `$ref` to no step)",
  invalid_tool: "400: a custom tool definition cannot be used (a reserved id, a bad schema or endpoint)",
  invalid_tool_input: "400: a step's input does not match its tool's schema; `details.field` names the field",
  invalid_mcp_server: "400: an MCP server cannot be added as configured (its tools or its OAuth set-up)",
  unknown_tool: "400: a plan or allowlist names a tool that is neither built in nor the tenant's",
  unknown_llm: "400: the task or settings name an LLM the tenant has not configured",
  tool_not_allowed: "400: a plan's step uses a tool outside the task's `tools` allowlist",
  llm_not_configured: "400: a natural-language task, and the tenant has no default LLM",
  egress_denied: "400: a URL points at a host the egress policy refuses (private, loopback, not allowlisted)",
  invalid_state: "400: an OAuth callback's `state` is unknown, used or expired",
  authorization_denied: "400: the provider answered the OAuth callback with an error (the user declined)",
  bad_request: "400: malformed HTTP, refused before any route",
  invalid_token: "401: the bearer token is missing, malformed, expired or not trusted",
  forbidden: "403: the token's role may not do this (admin routes, another user's approvals)",
  not_found: "404: no such object for this tenant (another tenant's is never revealed), or no such route",
  method_not_allowed: "405: the path exists with other methods, listed in `Allow` and `details.allow`",
  conflict: "409: the object is not in a state that allows this (e.g. cancelling an ended task)",
  task_finished: "409: the task has already ended (cancelling it)",
  not_waiting: "409: the step is not waiting for approval",
  stale_input_hash: "409: an approval's `input_hash` is not the waiting call's",
  payload_too_large: "413: the body is over the limit (default 1 MiB)",
  unsupported_media_type: "415: the body is not `application/json`",
  headers_too_large: "431: the request headers (a token included) are over 16 KiB",
  rate_limited: "429: over the tenant's request rate or concurrent tasks; see `Retry-After`",
  internal_error: "500: an unexpected failure; `details.trace_id` finds it in the traces",
  upstream_failed: "502: a provider (token endpoint, MCP server) answered with an error or garbage",
  unavailable: "503: the runtime cannot take the request now (storage away, cluster busy); see `Retry-After`"
}

/** The body of every non-2xx answer: `{"error": {"code", "message", "details"?}}`. */
export const ErrorBody = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  details: Schema.optional(ErrorDetails)
})
export type ErrorBody = typeof ErrorBody.Type

/** `ErrorBody` as the API answers it: one of the `ErrorCode`s. */
export const ApiErrorBody = Schema.Struct({
  code: ErrorCode,
  message: Schema.String,
  details: Schema.optional(ErrorDetails)
}).annotations({
  identifier: "Error",
  description: "An error answer's body under `error`. Codes:\n" +
    Object.entries(errorCodes).map(([code, meaning]) => `- \`${code}\`: ${meaning}`).join("\n")
})
export type ApiErrorBody = typeof ApiErrorBody.Type

/** A body in the API's error envelope, for answers written without an error class (no route, a body refused). */
export const envelopeOf = (error: ApiErrorBody): { readonly error: ApiErrorBody } => ({ error })

const fields = (code: ErrorCode) => ({
  code: Schema.optionalWith(ErrorCode, { default: () => code }),
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

type WireError = { readonly code: ErrorCode; readonly message: string; readonly details?: ErrorDetails | undefined }

/**
 * The HTTP encoding of a wire error: the error envelope of API.md with the given status.
 * Over RPC the same classes travel in their tagged form.
 */
export const httpError = <A extends WireError, I, R>(
  error: Schema.Schema<A, I, R> & { new(props: ApiErrorBody): A },
  status: number
): Schema.Schema<A, { readonly error: ApiErrorBody }> =>
  Schema.transform(Schema.Struct({ error: ApiErrorBody }), Schema.typeSchema(error), {
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
