import {
  Conflict,
  ErrorCode,
  Forbidden,
  InvalidRequest,
  NotFound,
  TooManyRequests,
  Unauthorized,
  Unavailable,
  UpstreamFailed
} from "@altan/domain/Errors"
import type { TaskId } from "@altan/domain/Ids"
import { TaskEvent } from "@altan/domain/Task"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as ParseResult from "effect/ParseResult"
import type * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"

export interface TaskEventsOptions {
  /** Where the API is served, e.g. `http://localhost:8080`. */
  readonly baseUrl: string | URL
  /** The bearer token sent with every request. */
  readonly token: string | Redacted.Redacted<string>
  /** Resume after this event id (`Last-Event-ID`); from the task's first event otherwise. */
  readonly after?: string | undefined
  /**
   * How many connection attempts in a row may fail (a refused or reset connection, a 5xx or 429 answer, a stream
   * that ends before the terminal event) before the stream gives up; every event received starts the count again
   * (default 8).
   */
  readonly reconnects?: number | undefined
  /** The wait before the first reconnect, doubled after each failed one up to 5 seconds (default 200 ms). */
  readonly retryDelay?: Duration.DurationInput | undefined
}

/** What a failed event stream answers: the API's error, a transport failure, or an event that is not one. */
export type TaskEventsError =
  | InvalidRequest
  | Unauthorized
  | Forbidden
  | NotFound
  | Conflict
  | TooManyRequests
  | Unavailable
  | UpstreamFailed
  | HttpClientError.HttpClientError
  | ParseResult.ParseError

const terminal: ReadonlySet<string> = new Set(["task.succeeded", "task.failed", "task.cancelled"])

const Envelope = Schema.parseJson(Schema.Struct({
  error: Schema.Struct({
    code: Schema.String,
    message: Schema.String,
    details: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
  })
}))

type WireError = {
  readonly code: string
  readonly message: string
  readonly details?: { readonly [key: string]: unknown } | undefined
}

const isErrorCode = Schema.is(ErrorCode)

/** A wire error as the error classes take it: a code this client does not know stays in `details.code`. */
const propsOf = (error: WireError) =>
  isErrorCode(error.code)
    ? { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) }
    : { message: error.message, details: { ...error.details, code: error.code } }

type ErrorClass = new(props: ReturnType<typeof propsOf>) => TaskEventsError

/** The API's error classes by HTTP status (`Errors.ts`). */
const byStatus: Record<number, ErrorClass> = {
  400: InvalidRequest,
  401: Unauthorized,
  403: Forbidden,
  404: NotFound,
  409: Conflict,
  429: TooManyRequests,
  502: UpstreamFailed,
  503: Unavailable
}

/** The API's error classes by their default `code`, for an `event: error` frame (which has no status). */
const byCode: Record<string, ErrorClass> = {
  invalid_request: InvalidRequest,
  invalid_token: Unauthorized,
  forbidden: Forbidden,
  not_found: NotFound,
  conflict: Conflict,
  task_finished: Conflict,
  rate_limited: TooManyRequests,
  upstream_failed: UpstreamFailed,
  unavailable: Unavailable
}

/** The API's error for an HTTP status and its `{"error": {...}}` body; another 5xx or status is `Unavailable`. */
const apiError = (status: number, body: string): TaskEventsError => {
  const decoded = Schema.decodeUnknownOption(Envelope)(body)
  const error: WireError = decoded._tag === "Some"
    ? decoded.value.error
    : { code: `http_${status}`, message: `HTTP ${status}${body === "" ? "" : `: ${body.slice(0, 500)}`}` }
  return new (byStatus[status] ?? Unavailable)(propsOf(error))
}

/** The error of an `event: error` frame, by its code; an unknown code (or a frame that is not JSON) is `Unavailable`. */
const frameError = (data: string): TaskEventsError => {
  const decoded = Schema.decodeUnknownOption(Envelope)(data)
  if (decoded._tag === "None") return new Unavailable({ code: "unavailable", message: data.slice(0, 500) })
  return new (byCode[decoded.value.error.code] ?? Unavailable)(propsOf(decoded.value.error))
}

/**
 * Whether another connection may succeed: a transport failure (refused, reset, a body cut off), the server busy or
 * restarting (`Unavailable`, a 5xx), a rate limit. Not an answer about the task or the token, nor an event that does
 * not decode (it would again).
 */
const retryable = (error: TaskEventsError): boolean =>
  HttpClientError.isHttpClientError(error) || error._tag === "Unavailable" || error._tag === "TooManyRequests" ||
  error._tag === "UpstreamFailed"

const maxDelay = Duration.seconds(5)

interface Frame {
  readonly id: string | undefined
  readonly event: string | undefined
  readonly data: string
}

interface Pending {
  readonly id: string | undefined
  readonly event: string | undefined
  readonly data: ReadonlyArray<string>
}

const empty: Pending = { id: undefined, event: undefined, data: [] }

/** One line of an event stream: a frame when it ends one (a blank line); comments and unknown fields ignored. */
const nextLine = (pending: Pending, line: string): readonly [Pending, ReadonlyArray<Frame>] => {
  if (line === "") {
    return [
      empty,
      pending.data.length > 0 ? [{ id: pending.id, event: pending.event, data: pending.data.join("\n") }] : []
    ]
  }
  if (line.startsWith(":")) return [pending, []]
  const colon = line.indexOf(":")
  const field = colon === -1 ? line : line.slice(0, colon)
  const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "")
  if (field === "data") return [{ ...pending, data: [...pending.data, value] }, []]
  if (field === "id") return [{ ...pending, id: value }, []]
  if (field === "event") return [{ ...pending, event: value }, []]
  return [pending, []]
}

/** Server-sent event frames of a text stream's lines. */
const frames = <E, R>(lines: Stream.Stream<string, E, R>): Stream.Stream<Frame, E, R> =>
  Stream.flattenIterables(Stream.mapAccum(lines, empty, nextLine))

const decodeEvent = Schema.decode(Schema.parseJson(TaskEvent))

/**
 * A task's events over server-sent events (`GET /v1/tasks/{task_id}/events`): those so far, then live ones, ending
 * with the terminal event (`task.succeeded`, `task.failed`, `task.cancelled`). A connection that fails or ends before
 * it (refused, reset, cut off, a 5xx or 429 answer) is opened again after a backoff with `Last-Event-ID`, so no event
 * is missed or repeated; after `reconnects` failed attempts in a row (none of them with an event) the stream fails with
 * the last one's error (or ends, if the connections ended cleanly). An answer about the task or the token (`NotFound`,
 * `Unauthorized`, `Forbidden`...) fails it at once. Needs an `HttpClient`, e.g. `FetchHttpClient.layer`.
 */
export const taskEvents = (
  options: TaskEventsOptions,
  taskId: TaskId | string
): Stream.Stream<TaskEvent, TaskEventsError, HttpClient.HttpClient> => {
  const url = `${String(options.baseUrl).replace(/\/+$/, "")}/v1/tasks/${encodeURIComponent(taskId)}/events`
  const budget = options.reconnects ?? 8
  const firstDelay = Duration.decode(options.retryDelay ?? "200 millis")

  const connect = (after: string | undefined) =>
    Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      const request = HttpClientRequest.get(url).pipe(
        HttpClientRequest.bearerToken(options.token),
        HttpClientRequest.setHeader("accept", "text/event-stream"),
        after === undefined ? (r) => r : HttpClientRequest.setHeader("last-event-id", after)
      )
      const response = yield* client.execute(request)
      if (response.status !== 200) {
        const body = yield* Effect.orElseSucceed(response.text, () => "")
        return yield* Effect.fail(apiError(response.status, body))
      }
      return response.stream.pipe(Stream.decodeText(), Stream.splitLines, frames)
    })

  /** The wait before attempt `failures + 1`: doubling from `retryDelay`, at most 5 s (or what a 429 asks for). */
  const delayAfter = (failures: number, error: TaskEventsError | undefined) => {
    const backoff = Duration.min(Duration.times(firstDelay, 2 ** (failures - 1)), maxDelay)
    const asked = error?._tag === "TooManyRequests" ? error.details?.retry_after_ms : undefined
    return typeof asked === "number" ? Duration.max(backoff, Duration.millis(Math.min(asked, 30_000))) : backoff
  }

  /** One connection from `after`, then the next one if it failed or ended early; `failures` so far in a row. */
  const follow = (
    after: string | undefined,
    failures: number
  ): Stream.Stream<TaskEvent, TaskEventsError, HttpClient.HttpClient> =>
    Stream.suspend(() => {
      let last = after
      let received = false
      let ended = false
      let failed = false
      const events = Stream.unwrapScoped(connect(after)).pipe(
        Stream.mapEffect((frame): Effect.Effect<TaskEvent, TaskEventsError> =>
          frame.event === "error" ? Effect.fail(frameError(frame.data)) : decodeEvent(frame.data)
        ),
        Stream.tap((event) =>
          Effect.sync(() => {
            last = event.id
            received = true
            if (terminal.has(event.type)) ended = true
          })
        ),
        // the terminal event is the last: the connection is let go without waiting for the server to close it
        Stream.takeUntil((event) => terminal.has(event.type))
      )
      /** After this connection failed with `error` (or ended early, `undefined`): give up, or connect again. */
      const next = (
        error: TaskEventsError | undefined
      ): Stream.Stream<TaskEvent, TaskEventsError, HttpClient.HttpClient> => {
        if (ended) return Stream.empty
        if (error !== undefined && !retryable(error)) return Stream.fail(error)
        const inARow = received ? 1 : failures + 1
        if (inARow > budget) return error === undefined ? Stream.empty : Stream.fail(error)
        return Stream.fromEffect(Effect.sleep(delayAfter(inARow, error))).pipe(
          Stream.drain,
          Stream.concat(follow(last, inARow))
        )
      }
      return Stream.concat(
        events.pipe(Stream.catchAll((error) => {
          failed = true
          return next(error)
        })),
        Stream.suspend(() => (failed ? Stream.empty : next(undefined)))
      )
    })
  return follow(options.after, 0)
}
