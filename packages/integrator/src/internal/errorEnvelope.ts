import { envelopeOf, InvalidRequest, TooManyRequests, Unavailable } from "@altan/domain/Errors"
import { expectedOf, reworded, shown } from "@altan/domain/Wording"
import { RedisError } from "@altan/redis/Redis"
import { HttpApiDecodeError } from "@effect/platform/HttpApiError"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerRespondable from "@effect/platform/HttpServerRespondable"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import { retryAfterSeconds } from "../Admission.js"
import { SecretStoreError } from "../SecretStore.js"
import { allowedMethods } from "./allowedMethods.js"

const fieldOf = (path: ReadonlyArray<PropertyKey>) => path.map(String).join(".")

/**
 * The refusals of one field in the API's words: the alternatives of a union said together (`must be one of "sync" or
 * "async" (got "fast")`, `must be a string or an object (got 42)`), an optional's `undefined` left out.
 */
const fieldMessage = (messages: ReadonlyArray<string>): string => {
  const alternatives = messages.flatMap((m) => {
    const match = /^Expected (.+?), actual (.+)$/s.exec(m)
    return match ? [{ expected: expectedOf(match[1]!), actual: match[2]! }] : []
  })
  if (alternatives.length < 2 || alternatives.length !== messages.length) return reworded(messages[0]!)
  const expected = [...new Set(alternatives.flatMap((a) => (a.expected === undefined ? [] : [a.expected])))]
  const got = ` (got ${shown(alternatives[0]!.actual)})`
  if (expected.length === 0) return `must be absent${got}`
  if (expected.length === 1) return `must be ${expected[0]}${got}`
  const literals = expected.every((e) => /^".*"$/.test(e))
  const list = `${expected.slice(0, -1).join(", ")} or ${expected[expected.length - 1]}`
  return `must be ${literals ? "one of " : ""}${list}${got}`
}

/** A request the API's schemas refused, as the API's own error: the deepest issue names the field. */
export const invalidRequestOf = (e: HttpApiDecodeError): InvalidRequest => {
  // an optional field's `undefined` alternative says nothing about what to send
  const issues = e.issues.filter((i) => !i.message.startsWith("Expected undefined")).map((i) => ({
    field: fieldOf(i.path),
    message: reworded(i.message)
  }))
  // For a union (text OR plan) the deepest issue is the one that says what is wrong.
  const first = issues.reduce<typeof issues[number] | undefined>(
    (deepest, i) => (!deepest || i.field.split(".").length > deepest.field.split(".").length ? i : deepest),
    undefined
  )
  const message = first === undefined
    ? e.message
    : fieldMessage(e.issues.filter((i) => fieldOf(i.path) === first.field).map((i) => i.message))
  return new InvalidRequest({
    message: first ? `${first.field || "body"}: ${message}` : e.message,
    details: { field: first?.field ?? "", issues }
  })
}

/** `Retry-After` on the answer to a 429 or 503, from the error's `details.retry_after_ms` (default 1 s). */
const withRetryAfter = (e: TooManyRequests | Unavailable) => {
  const seconds = retryAfterSeconds(e)
  return HttpApp.appendPreResponseHandler((_request, response) =>
    Effect.succeed(HttpServerResponse.setHeader(response, "retry-after", String(seconds)))
  )
}

/** A response (or something that renders as one) raised as a defect: the framework answers it as it is. */
const isResponse = (u: unknown) => HttpServerResponse.isServerResponse(u) || HttpServerRespondable.isRespondable(u)

/** The stores' own errors; `SqlError` is `@effect/sql`'s (the cluster's Postgres storage), not a dependency here. */
const isStoreError = (u: unknown) => RedisError.is(u) || SecretStoreError.is(u) || Predicate.isTagged(u, "SqlError")
const outageCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH"])
const outageMessage = /max retries per request|connection is closed|stream isn't writeable/i

/**
 * Whether a defect is a storage backend going away rather than a bug: the stores' own errors (they have no
 * error channel, so Redis failures arrive as defects), ioredis' give-ups and refused or dropped connections.
 */
export const isStorageOutage = (defect: unknown): boolean => {
  let u = defect
  for (let hops = 0; typeof u === "object" && u !== null && hops < 5; hops++) {
    if (isStoreError(u)) return true
    const { code, message, name } = u as Record<string, unknown>
    if (typeof code === "string" && outageCodes.has(code)) return true
    if (name === "MaxRetriesPerRequestError") return true
    if (typeof message === "string" && outageMessage.test(message)) return true
    u = (u as { readonly cause?: unknown }).cause
  }
  return false
}

/**
 * A defect (a bug, or a store that failed) answered with the envelope instead of the framework's empty 500:
 * 503 `unavailable` with `Retry-After` when storage is away, else 500 `internal_error`. The client gets a
 * generic message and the trace id; the log gets the cause.
 */
const unexpected = (
  cause: Cause.Cause<unknown>,
  defect: unknown
): Effect.Effect<HttpServerResponse.HttpServerResponse, Unavailable> =>
  Effect.gen(function*() {
    const outage = isStorageOutage(defect)
    yield* Effect.logError(
      outage ? "storage unavailable while answering a request" : "defect answering a request",
      cause
    )
    const traceId = Option.map(yield* Effect.option(Effect.currentSpan), (span) => span.traceId)
    const details = Option.match(traceId, { onNone: () => undefined, onSome: (trace_id) => ({ trace_id }) })
    if (outage) {
      const error = new Unavailable({ message: "storage is unavailable; retry later", ...(details ? { details } : {}) })
      return yield* Effect.zipRight(withRetryAfter(error), Effect.fail(error))
    }
    return HttpServerResponse.unsafeJson(
      envelopeOf({
        code: "internal_error",
        message: "the request failed unexpectedly",
        ...(details ? { details } : {})
      }),
      { status: 500 }
    )
  })

/**
 * Turns what the framework raises before a handler runs (undecodable bodies, bad path params), and any
 * defect of a handler, into the API's own errors, so every answer has the same envelope.
 */
export const errorEnvelope = (app: HttpApp.Default): HttpApp.Default<InvalidRequest | Unavailable> =>
  Effect.catchAllCause(app, (cause): HttpApp.Default<InvalidRequest | Unavailable> => {
    // A body that cannot be read arrives as a defect (the framework reads it with orDie).
    const e: unknown = Option.getOrUndefined(Option.orElse(Cause.failureOption(cause), () => Cause.dieOption(cause)))
    if (e instanceof HttpApiDecodeError) return Effect.fail(invalidRequestOf(e))
    if (HttpServerError.isServerError(e) && e._tag === "RequestError") {
      return Effect.fail(
        new InvalidRequest({ message: "the request body is not valid JSON", details: { field: "body" } })
      )
    }
    // every 429 and 503 says when to come back, from the error's own details
    if (e instanceof TooManyRequests || e instanceof Unavailable) {
      return Effect.zipRight(withRetryAfter(e), Effect.failCause(cause))
    }
    if (Option.isNone(Cause.failureOption(cause)) && !Cause.isInterruptedOnly(cause) && !isResponse(e)) {
      return unexpected(cause, e)
    }
    return Effect.failCause(cause)
  })

const wwwAuthenticate = `Bearer realm="altan", error="invalid_token"`

/** Last touches on every response: the `WWW-Authenticate` challenge on 401, JSON bodies on bare 404s. */
export const finishResponse = (
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse
) => {
  // a route that says more (`/mcp` names its protected-resource metadata) keeps its own challenge
  if (response.status === 401 && response.headers["www-authenticate"] === undefined) {
    return Effect.succeed(HttpServerResponse.setHeader(response, "www-authenticate", wwwAuthenticate))
  }
  // the rest of an oversized body is not worth reading: close the connection after answering
  if (response.status === 413) return Effect.succeed(HttpServerResponse.setHeader(response, "connection", "close"))
  if (response.status === 404 && response.body._tag === "Empty") {
    const path = request.url.split("?")[0]!
    // a known path asked with another method: 405, saying which methods it takes
    const allowed = allowedMethods(path)
    if (allowed.length > 0) {
      return Effect.succeed(HttpServerResponse.unsafeJson(
        envelopeOf({
          code: "method_not_allowed",
          message: `${request.method} is not allowed on ${path}; use ${allowed.join(" or ")}`,
          details: { allow: allowed }
        }),
        { status: 405, headers: { allow: allowed.join(", ") } }
      ))
    }
    return Effect.succeed(HttpServerResponse.unsafeJson(
      envelopeOf({ code: "not_found", message: `no route for ${request.method} ${path}` }),
      { status: 404 }
    ))
  }
  return Effect.succeed(response)
}
