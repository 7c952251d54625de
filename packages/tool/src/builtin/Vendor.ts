/** Plumbing shared by the vendor tools (Slack, HubSpot, Salesforce, Google, Microsoft). */
import type { EgressMethod, EgressResponse } from "@altan/domain/Egress"
import { ToolFailed, toolFailedFields } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { text } from "../Egress.js"
import * as Tool from "../Tool.js"
import { isRecord } from "./internal.js"

/** What a vendor call failed with, given the generic status failure and the vendor's answer. */
export type VendorError = (error: ToolFailed, response: EgressResponse) => ToolFailed

/** A vendor's body parsed as JSON, or undefined when it is not JSON. */
export const parseJson = (response: EgressResponse): unknown => {
  try {
    return JSON.parse(text(response))
  } catch {
    return undefined
  }
}

/**
 * One call to a vendor API with the tenant's credential: the credential as the header the integrator named,
 * `json` sent as the body, non-2xx answers mapped by `onError`. Gives the response and its parsed body.
 */
export const vendorExchange = (options: {
  readonly toolId: string
  readonly provider: string
  readonly ctx: Tool.ToolContext
  /** An effect is run after the credential check, e.g. to refuse a missing base URL. */
  readonly url: string | Effect.Effect<string, ToolFailed>
  readonly method: EgressMethod
  readonly json?: unknown
  /** Sent with a `json` body; default `application/json; charset=utf-8`. */
  readonly contentType?: string
  readonly onError: VendorError
}): Effect.Effect<{ readonly response: EgressResponse; readonly answer: unknown }, ToolFailed> =>
  Effect.gen(function*() {
    const { ctx, provider, toolId } = options
    const credential = yield* Tool.requireCredential(toolId, provider, ctx)
    const url = typeof options.url === "string" ? options.url : yield* options.url
    const headers: Record<string, string> = {
      accept: "application/json",
      [credential.header]: Redacted.value(credential.value)
    }
    if (options.json !== undefined) headers["content-type"] = options.contentType ?? "application/json; charset=utf-8"
    const response = yield* ctx.http({
      url,
      method: options.method,
      headers,
      ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {})
    }).pipe(Effect.mapError(Tool.httpFailed(toolId)))
    const answer = yield* Tool.checkStatus(toolId, response).pipe(
      Effect.mapError((error) => options.onError(error, response))
    )
    return { response, answer }
  })

/** `vendorExchange`, giving only the parsed body. */
export const vendorCall = (options: Parameters<typeof vendorExchange>[0]): Effect.Effect<unknown, ToolFailed> =>
  Effect.map(vendorExchange(options), ({ answer }) => answer)

/** Failures as `<tool>: <Vendor> answered HTTP <status><detail>`, the detail read out of the vendor's answer. */
export const answeredHttp =
  (vendor: string, detail: (response: EgressResponse) => string): VendorError => (error, response) =>
    new ToolFailed({
      ...toolFailedFields(error),
      message: `${error.tool_id}: ${vendor} answered HTTP ${response.status}${detail(response)}`,
      status: response.status
    })

/** `: <explanation>` out of the vendor's JSON error body, or nothing. */
export const colonDetail = (explain: (body: unknown) => string | undefined) => (response: EgressResponse): string => {
  const detail = explain(parseJson(response))
  return detail === undefined ? "" : `: ${detail}`
}

/** An optional input field that must be absent rather than `undefined` when not given. */
export const optional = <S extends Schema.Schema.Any>(schema: S) => Schema.optionalWith(schema, { exact: true })

/**
 * Decodes a vendor's success body leniently (unknown fields dropped); a body of another shape is a tool failure
 * whose message starts with `what`.
 */
export const decodeVendor = <A, I>(
  toolId: string,
  schema: Schema.Schema<A, I>,
  what = "the upstream answered with an unexpected body"
) => {
  const decode = Schema.decodeUnknown(schema)
  return (body: unknown): Effect.Effect<A, ToolFailed> =>
    decode(body).pipe(
      Effect.mapError((error) =>
        new ToolFailed({
          tool_id: toolId,
          message: `${toolId}: ${what}: ${error.message.slice(0, 300)}`,
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

/** `segment`, for ids not checked by a `PathSegment` schema: "", "." and ".." fail the tool. */
export const checkedSegment = (toolId: string, value: string): Effect.Effect<string, ToolFailed> =>
  value === "" || value === "." || value === ".."
    ? Effect.fail(
      new ToolFailed({ tool_id: toolId, message: `${toolId}: invalid id ${JSON.stringify(value)}`, retryable: false })
    )
    : Effect.succeed(segment(value))

/** A non-empty id that is safe as one path segment once encoded: not "." or "..". */
export const PathSegment = Schema.NonEmptyTrimmedString.pipe(
  Schema.filter((value) => value !== "." && value !== "..", {
    message: () => "must not be \".\" or \"..\"",
    jsonSchema: {}
  })
)

/** Reads `error.message` style bodies. */
export const errorField = (body: unknown): Record<string, unknown> | undefined =>
  isRecord(body) && isRecord(body.error) ? body.error : undefined
