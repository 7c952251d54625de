import { ErrorCode, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable } from "@altan/domain/Errors"
import type { TaskId } from "@altan/domain/Ids"
import { TaskEvent } from "@altan/domain/Task"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
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
  /** Reconnects after a connection that ended before the terminal event (default 5). */
  readonly reconnects?: number | undefined
}

/** What a failed event stream answers: the API's error, a transport failure, or an event that is not one. */
export type TaskEventsError =
  | NotFound
  | Unauthorized
  | Forbidden
  | TooManyRequests
  | Unavailable
  | HttpClientError.HttpClientError
  | ParseResult.ParseError

const terminal: ReadonlySet<string> = new Set(["task.succeeded", "task.failed", "task.cancelled"])

const Envelope = Schema.parseJson(Schema.Struct({
  error: Schema.Struct({ code: Schema.String, message: Schema.String })
}))

/** The API's error for an HTTP status and its `{"error": {...}}` body. */
const apiError = (status: number, body: string) => {
  const { code, message } = Schema.decodeUnknownOption(Envelope)(body).pipe(
    (o) => o._tag === "Some" ? o.value.error : { code: `http_${status}`, message: body.slice(0, 500) }
  )
  return errorOf(status, code, message)
}

const isErrorCode = Schema.is(ErrorCode)

/** The error class for a status, with the API's code; a code this client does not know stays in `details.code`. */
const errorOf = (status: number, received: string, message: string) => {
  const known = isErrorCode(received)
  const code = known ? { code: received, message } : { message, details: { code: received } }
  switch (status) {
    case 401:
      return new Unauthorized(code)
    case 403:
      return new Forbidden(code)
    case 404:
      return new NotFound(code)
    case 429:
      return new TooManyRequests(code)
    default:
      return new Unavailable(code)
  }
}

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
 * with the terminal event (`task.succeeded`, `task.failed`, `task.cancelled`). A connection that ends before it is
 * opened again with `Last-Event-ID`, so no event is missed or repeated. Needs an `HttpClient`, e.g.
 * `FetchHttpClient.layer`.
 */
export const taskEvents = (
  options: TaskEventsOptions,
  taskId: TaskId | string
): Stream.Stream<TaskEvent, TaskEventsError, HttpClient.HttpClient> => {
  const url = `${String(options.baseUrl).replace(/\/+$/, "")}/v1/tasks/${encodeURIComponent(taskId)}/events`
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
        return yield* Effect.flatMap(response.text, (body) => Effect.fail(apiError(response.status, body)))
      }
      return response.stream.pipe(Stream.decodeText(), Stream.splitLines, frames)
    })

  const follow = (after: string | undefined, reconnects: number): Stream.Stream<TaskEvent, TaskEventsError, any> => {
    let last = after
    let ended = false
    const events = Stream.unwrapScoped(connect(after)).pipe(
      Stream.mapEffect((frame): Effect.Effect<TaskEvent, TaskEventsError> =>
        frame.event === "error"
          ? Effect.flatMap(
            Effect.orElseSucceed(Schema.decode(Envelope)(frame.data), () => ({
              error: { code: "unavailable", message: frame.data }
            })),
            ({ error }) => Effect.fail(errorOf(error.code === "not_found" ? 404 : 503, error.code, error.message))
          )
          : decodeEvent(frame.data)
      ),
      Stream.tap((event) =>
        Effect.sync(() => {
          last = event.id
          if (terminal.has(event.type)) ended = true
        })
      )
    )
    return Stream.concat(
      events,
      Stream.suspend(() =>
        ended || reconnects <= 0
          ? Stream.empty
          : Stream.fromEffect(Effect.sleep("200 millis")).pipe(
            Stream.drain,
            Stream.concat(follow(last, reconnects - 1))
          )
      )
    )
  }
  return follow(options.after, options.reconnects ?? 5)
}
