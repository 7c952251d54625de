import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { isRecord } from "./internal.js"

// ---------------------------------------------------------------------------------------------------------------
// Shared by the vendor tools (Google, Microsoft)

/** A JSON call to a vendor API with the tenant's credential; what the vendor's error body says ends up in the error. */
export const vendorRequest = (options: {
  readonly toolId: string
  readonly provider: string
  readonly ctx: Tool.ToolContext
  readonly url: string
  readonly method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE"
  readonly json?: unknown
  /** The vendor's explanation out of a parsed error body, if it has one. */
  readonly errorMessage: (body: unknown) => string | undefined
}): Effect.Effect<unknown, ToolFailed> =>
  Effect.gen(function*() {
    const { ctx, toolId } = options
    const credential = ctx.credential
    if (credential === undefined) {
      return yield* new ToolFailed({
        tool_id: toolId,
        message:
          `no ${options.provider} connection for this tenant: connect it with PUT /v1/connections/${options.provider}`,
        retryable: false
      })
    }
    const headers: Record<string, string> = {
      accept: "application/json",
      [credential.header]: Redacted.value(credential.value)
    }
    if (options.json !== undefined) headers["content-type"] = "application/json; charset=utf-8"
    const response = yield* ctx.http({
      url: options.url,
      method: options.method,
      headers,
      ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {})
    }).pipe(Effect.mapError(Tool.httpFailed(toolId)))
    return yield* Tool.checkStatus(toolId, response).pipe(
      Effect.mapError((error) => {
        let detail: string | undefined
        try {
          detail = options.errorMessage(JSON.parse(new TextDecoder().decode(response.body)))
        } catch {
          detail = undefined
        }
        if (detail === undefined) return error
        return new ToolFailed({
          tool_id: error.tool_id,
          message: `${error.message}: ${detail}`,
          retryable: error.retryable,
          ...(error.status !== undefined ? { status: error.status } : {}),
          ...(error.body_excerpt !== undefined ? { body_excerpt: error.body_excerpt } : {})
        })
      })
    )
  })

/** Decodes a vendor's success body leniently (unknown fields dropped); a body of another shape is a tool failure. */
export const decodeVendor = <A, I>(toolId: string, schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknown(schema)
  return (body: unknown): Effect.Effect<A, ToolFailed> =>
    decode(body).pipe(
      Effect.mapError((error) =>
        new ToolFailed({
          tool_id: toolId,
          message: `${toolId}: the upstream answered with an unexpected body: ${error.message.slice(0, 300)}`,
          retryable: false
        })
      )
    )
}

/** The base URL of a provider without a trailing slash: the tenant's override, else the vendor's default. */
export const baseUrlOf = (ctx: Tool.ToolContext, provider: string, fallback: string): string =>
  (ctx.baseUrl(provider) ?? fallback).replace(/\/+$/, "")

/**
 * One path segment, encoded so that an id cannot add segments (`/`, `?`, `#`). URL parsers resolve "." and ".."
 * even percent-encoded, so ids must also be `PathSegment`s, which refuse those two.
 */
export const segment = (value: string): string => encodeURIComponent(value)

/** A non-empty id that is safe as one path segment once encoded: not "." or "..". */
export const PathSegment = Schema.NonEmptyTrimmedString.pipe(
  Schema.filter((value) => value !== "." && value !== "..", {
    message: () => "must not be \".\" or \"..\"",
    jsonSchema: {}
  })
)

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

const parseBody = (contentType: string, text: string): unknown => {
  if (text === "") return null
  if (contentType.includes("json") || /^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}

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
      const text = new TextDecoder().decode(response.body)
      return {
        status: response.status,
        headers: { ...response.headers },
        body: parseBody(response.headers["content-type"] ?? "", text)
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

/** Reads `error.message` style bodies; exported for the vendor modules. */
export const errorField = (body: unknown): Record<string, unknown> | undefined =>
  isRecord(body) && isRecord(body.error) ? body.error : undefined
