import { envelopeOf } from "@altan/domain/Errors"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as HttpMethod from "@effect/platform/HttpMethod"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"

const tooLarge = (maxBodyBytes: number) =>
  HttpServerResponse.unsafeJson(
    envelopeOf({ code: "payload_too_large", message: `the request body is over ${maxBodyBytes} bytes` }),
    { status: 413 }
  )

/** A body the API would misread (a form, plain text): it takes JSON, and says so. */
const notJson = (contentType: string | undefined) =>
  HttpServerResponse.unsafeJson(
    envelopeOf({
      code: "unsupported_media_type",
      message: `the request body must be JSON (content-type: application/json), not ${contentType ?? "untyped"}`,
      details: { field: "content-type", expected: "application/json" }
    }),
    { status: 415, headers: { accept: "application/json" } }
  )

/** `application/json` and `+json` types; the RPC endpoints (ndjson) check their own. */
const takesBody = (request: HttpServerRequest.HttpServerRequest) => {
  if (request.url.startsWith("/rpc")) return true
  const type = request.headers["content-type"]?.split(";")[0]!.trim().toLowerCase()
  return type === "application/json" || (type !== undefined && /^application\/[a-z0-9.+-]+\+json$/.test(type))
}

const tooDeep = (maxJsonDepth: number) =>
  HttpServerResponse.unsafeJson(
    envelopeOf({
      code: "invalid_json",
      message: `the request body is JSON nesting deeper than ${maxJsonDepth} levels`,
      details: { field: "body", max_depth: maxJsonDepth }
    }),
    { status: 400 }
  )

/**
 * Whether JSON (or ndjson) text nests objects and arrays deeper than `max`, in one pass over its bytes and
 * without parsing it; brackets inside strings do not count. UTF-8 continuation bytes are never ASCII, so
 * bytes can be read as characters.
 */
export const nestsDeeperThan = (bytes: Uint8Array, max: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if (inString) {
      if (b === 0x5c) i++ // the escaped character, whatever it is
      else if (b === 0x22) inString = false
    } else if (b === 0x22) inString = true
    else if (b === 0x7b || b === 0x5b) {
      if (++depth > max) return true
    } else if ((b === 0x7d || b === 0x5d) && depth > 0) depth--
  }
  return false
}

/** Reads a body of unknown length up to `limit` bytes; `undefined` once it goes over (the rest is left unread). */
const readLimited = (source: Readable, limit: number) =>
  Effect.async<Buffer | undefined, Error>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    const done = () => {
      source.off("data", onData).off("end", onEnd).off("error", onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        done()
        source.pause()
        resume(Effect.succeed(undefined))
      } else chunks.push(chunk)
    }
    const onEnd = () => {
      done()
      resume(Effect.succeed(Buffer.concat(chunks)))
    }
    const onError = (error: Error) => {
      done()
      resume(Effect.fail(error))
    }
    source.on("data", onData).on("end", onEnd).on("error", onError)
  })

/** The same request with its body already read (so the framework never reads the socket again). */
const withBody = (request: HttpServerRequest.HttpServerRequest, body: Buffer): HttpServerRequest.HttpServerRequest => {
  const text = body.toString("utf8")
  return Object.create(request, {
    text: { get: () => Effect.succeed(text) },
    arrayBuffer: { get: () => Effect.succeed(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)) },
    json: {
      get: () =>
        Effect.try({
          try: () => (text === "" ? null : JSON.parse(text) as unknown),
          catch: (cause) => new HttpServerError.RequestError({ request, reason: "Decode", cause })
        })
    }
  })
}

/**
 * Serves `request` with `serve` within the body limits. A declared length over the size limit is refused before
 * anything is read; any other body is read here, up to the limit (a chunked one is refused as soon as it passes
 * it), and refused when its JSON nests deeper than `maxJsonDepth`, before anything parses it. A body that is not
 * JSON by its content type (a form post, plain text) gets 415 naming the type the API takes.
 */
export const withBodyLimits = <E, R>(
  limits: { readonly maxBodyBytes: number; readonly maxJsonDepth: number },
  request: HttpServerRequest.HttpServerRequest,
  serve: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E | HttpServerError.RequestError, R> =>
  Effect.gen(function*() {
    const { maxBodyBytes, maxJsonDepth } = limits
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > maxBodyBytes) return tooLarge(maxBodyBytes)
    const hasBody = declared === undefined ? request.headers["transfer-encoding"] !== undefined : Number(declared) > 0
    if (!HttpMethod.hasBody(request.method) || !hasBody) return yield* serve
    if (!takesBody(request)) return notJson(request.headers["content-type"])
    const body = yield* readLimited(NodeHttpServerRequest.toIncomingMessage(request), maxBodyBytes).pipe(
      Effect.mapError((cause) => new HttpServerError.RequestError({ request, reason: "Transport", cause }))
    )
    if (body === undefined) return tooLarge(maxBodyBytes)
    if (nestsDeeperThan(body, maxJsonDepth)) return tooDeep(maxJsonDepth)
    return yield* Effect.provideService(serve, HttpServerRequest.HttpServerRequest, withBody(request, body))
  })
