import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { bodyOf } from "../Egress.js"
import * as Tool from "../Tool.js"

// ---------------------------------------------------------------------------------------------------------------
// http.request

const NO_CRLF = /^[^\r\n\0]*$/
const HeaderName = Schema.String.pipe(Schema.pattern(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, {
  message: () => "must be an HTTP header name (token characters only)"
}))
const HeaderValue = Schema.String.pipe(Schema.pattern(NO_CRLF, { message: () => "must not contain CR, LF or NUL" }))

const Method = Schema.Literal("GET", "POST", "PUT", "PATCH", "DELETE")

export const HttpRequestInput = Schema.Struct({
  url: Schema.String.pipe(Schema.pattern(/^https?:\/\//i, { message: () => "must be an http:// or https:// URL" }))
    .annotations({ description: "Absolute http(s) URL. Its host must be in the tenant's egress allowlist." }),
  method: Schema.optionalWith(Method, { exact: true }).annotations({ description: "HTTP method; default GET." }),
  headers: Schema.optionalWith(Schema.Record({ key: HeaderName, value: HeaderValue }), { exact: true })
    .annotations({ description: "Request headers, e.g. {\"authorization\": \"Bearer …\"}." }),
  query: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { exact: true })
    .annotations({ description: "Query parameters appended to the URL (URL-encoded for you)." }),
  json: Schema.optionalWith(Schema.Unknown, { exact: true }).annotations({
    description: "A JSON request body; sets content-type: application/json unless given. Exclusive with `body`."
  }),
  body: Schema.optionalWith(Schema.String, { exact: true }).annotations({
    description: "A raw text request body, sent as is. Exclusive with `json`."
  })
}).pipe(
  Schema.filter((input) => {
    if (input.json !== undefined && input.body !== undefined) {
      return { path: ["body"], message: "give either json or body, not both" }
    }
    if ((input.method ?? "GET") === "GET" && (input.json !== undefined || input.body !== undefined)) {
      return { path: [input.json !== undefined ? "json" : "body"], message: "a GET request cannot have a body" }
    }
    return true
  }, { jsonSchema: {} })
)
export type HttpRequestInput = typeof HttpRequestInput.Type

export const HttpRequestOutput = Schema.Struct({
  status: Schema.Int.annotations({ description: "The HTTP status of the response (after redirects)." }),
  headers: Schema.Record({ key: Schema.String, value: Schema.String }).annotations({
    description: "Response headers by lower-cased name."
  }),
  body: Schema.Unknown.annotations({
    description: "The response body: parsed JSON when it is JSON, otherwise the text; null when empty."
  })
})
export type HttpRequestOutput = typeof HttpRequestOutput.Type

/** `http.request`: a generic HTTP call, bound to the tenant's egress allowlist. */
export const HttpRequest: Tool.Tool = Tool.make({
  id: "http.request",
  name: "HTTP request",
  description: "Makes one HTTP request to a host in the tenant's egress allowlist (other hosts, private " +
    "addresses and cloud metadata endpoints are refused with egress_denied). Give `url`, `method` (GET, POST, PUT, " +
    "PATCH, DELETE; default GET), optional `headers`, `query` and either `json` (sent as JSON) or `body` (raw " +
    "text). Returns { status, headers, body } for EVERY HTTP status, including 4xx and 5xx: check `status` " +
    "yourself. `body` is parsed JSON when the response is JSON, else text. Only refused hosts, timeouts and " +
    "network errors fail the call. Responses are limited to 1 MiB and redirects are followed.",
  input: HttpRequestInput,
  output: HttpRequestOutput,
  sideEffect: true,
  run: (input, ctx) =>
    Effect.gen(function*() {
      const url = new URL(input.url)
      for (const [key, value] of Object.entries(input.query ?? {})) url.searchParams.append(key, value)
      const headers: Record<string, string> = { ...input.headers }
      const hasContentType = Object.keys(headers).some((name) => name.toLowerCase() === "content-type")
      let body: string | undefined = input.body
      if (input.json !== undefined) {
        body = JSON.stringify(input.json)
        if (!hasContentType) headers["content-type"] = "application/json"
      }
      const response = yield* ctx.http({
        url: url.href,
        method: input.method ?? "GET",
        headers,
        ...(body !== undefined ? { body } : {})
      }).pipe(Effect.mapError(Tool.httpFailed("http.request")))
      return {
        status: response.status,
        headers: { ...response.headers },
        body: bodyOf(response).value
      }
    })
})

// ---------------------------------------------------------------------------------------------------------------
// webhook.notify

const Present = Schema.Unknown.pipe(
  Schema.filter((value) => value !== undefined, { message: () => "is missing", jsonSchema: {} })
)

export const WebhookNotifyInput = Schema.Struct({
  url: Schema.String.pipe(Schema.pattern(/^https?:\/\//i, { message: () => "must be an http:// or https:// URL" }))
    .annotations({ description: "The webhook URL. Its host must be in the tenant's egress allowlist." }),
  event: Schema.NonEmptyTrimmedString.pipe(Schema.maxLength(200)).annotations({
    description: "The event name, e.g. \"order.created\"."
  }),
  payload: Present.annotations({ description: "Any JSON value, sent as `payload`." })
})
export type WebhookNotifyInput = typeof WebhookNotifyInput.Type

export const WebhookNotifyOutput = Schema.Struct({
  status: Schema.Int.annotations({ description: "The 2xx status the receiver answered." })
})

/** `webhook.notify`: POSTs an event as JSON to a webhook in the tenant's egress allowlist. */
export const WebhookNotify: Tool.Tool = Tool.make({
  id: "webhook.notify",
  name: "Notify a webhook",
  description: "POSTs the JSON document {\"event\": event, \"payload\": payload, \"sent_at\": ISO-8601 UTC time} " +
    "to `url` (content-type: application/json, user-agent: altan-webhook/1). The host must be in the tenant's " +
    "egress allowlist. Returns { status } on a 2xx answer; any other status fails (retryable for 5xx and 429).",
  input: WebhookNotifyInput,
  output: WebhookNotifyOutput,
  sideEffect: true,
  run: (input, ctx) =>
    Effect.gen(function*() {
      const sentAt = new Date().toISOString()
      const response = yield* ctx.http({
        url: input.url,
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "altan-webhook/1" },
        body: JSON.stringify({ event: input.event, payload: input.payload, sent_at: sentAt })
      }).pipe(Effect.mapError(Tool.httpFailed("webhook.notify")))
      yield* Tool.checkStatus("webhook.notify", response)
      return { status: response.status }
    })
})

/** The utility HTTP tools: no credential, only the tenant's egress allowlist. */
export const tools: ReadonlyArray<Tool.Tool> = [HttpRequest, WebhookNotify]
