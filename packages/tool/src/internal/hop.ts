import type { EgressMethod } from "@altan/domain/Egress"
import type { Dispatcher } from "undici"
import { readBody } from "./bodyReader.js"
import { TooLarge } from "./failures.js"

const flatten = (headers: Record<string, string | Array<string> | undefined>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value
  }
  return out
}

/** One answer of one hop: a redirect's `location`, or the status, headers and decoded body. */
export interface Hop {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Uint8Array
  readonly location: string | undefined
}

const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

/** Sends one request over the pinned dispatcher and reads its answer within the byte cap. */
export const exchange = async (
  dispatcher: Dispatcher,
  url: URL,
  options: {
    readonly method: EgressMethod
    readonly headers: Record<string, string>
    readonly body: string | Uint8Array | undefined
    readonly timeoutMs: number
    readonly maxBytes: number
  },
  signal: AbortSignal
): Promise<Hop> => {
  const response = await dispatcher.request({
    path: url.pathname + url.search,
    method: options.method,
    headers: options.headers,
    body: options.body ?? null,
    signal,
    // undici's own timers tick coarsely (~0.5 s) and may fire early; the precise limit is the caller's
    // Effect timeout, these are only backstops behind it
    headersTimeout: options.timeoutMs + 1_000,
    bodyTimeout: options.timeoutMs + 1_000
  })
  const headers = flatten(response.headers)
  if (isRedirect(response.statusCode) && headers["location"] !== undefined) {
    // Read a little so a small redirect body keeps the connection reusable; past that, drop the connection.
    await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined)
    return { status: response.statusCode, headers, body: new Uint8Array(), location: headers["location"] }
  }
  if (options.method === "HEAD" || response.statusCode === 204 || response.statusCode === 304) {
    await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined)
    return { status: response.statusCode, headers, body: new Uint8Array(), location: undefined }
  }
  const encodings = (headers["content-encoding"] ?? "").split(",").map((e) => e.trim().toLowerCase())
    .filter((e) => e !== "" && e !== "identity")
  const declared = Number(headers["content-length"])
  if (encodings.length === 0 && Number.isFinite(declared) && declared > options.maxBytes) {
    response.body.destroy()
    throw new TooLarge()
  }
  const body = await readBody(response.body, encodings, options.maxBytes, signal)
  if (encodings.length > 0) {
    delete headers["content-encoding"]
    delete headers["content-length"]
  }
  return { status: response.statusCode, headers, body, location: undefined }
}
