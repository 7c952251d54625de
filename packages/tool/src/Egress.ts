import { Egress, type EgressDenied, EgressFailed, type EgressRequest, type EgressResponse } from "@altan/domain/Egress"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Tracer from "effect/Tracer"
import { EgressConfig, type EgressSettings } from "./EgressConfig.js"
import * as EgressPolicy from "./EgressPolicy.js"
import { abortable, type Deadline, lookup, makeDeadline } from "./internal/deadline.js"
import { failureOf } from "./internal/failures.js"
import { exchange } from "./internal/hop.js"
import { makePools } from "./internal/pools.js"
import { defaultPort, hostOf, safeUrl } from "./internal/url.js"

export {
  Egress,
  EgressDenied,
  EgressFailed,
  EgressFailureReason,
  type EgressMethod,
  type EgressRequest,
  type EgressResponse
} from "@altan/domain/Egress"

const utf8 = new TextDecoder()

/** The body as UTF-8 text. */
export const text = (response: EgressResponse): string => utf8.decode(response.body)

/**
 * The body as a tool gives it back: parsed when it is JSON (by its content type, or by its look), else the text;
 * an empty body is `null`.
 */
export const bodyOf = (response: EgressResponse): { readonly text: string; readonly value: unknown } => {
  const raw = text(response)
  if (raw === "") return { text: raw, value: null }
  if ((response.headers["content-type"] ?? "").includes("json") || /^\s*[[{]/.test(raw)) {
    try {
      return { text: raw, value: JSON.parse(raw) }
    } catch {
      return { text: raw, value: raw }
    }
  }
  return { text: raw, value: raw }
}

/** The body parsed as JSON; a body that is not JSON fails with `bad_response`. */
export const json = (response: EgressResponse): Effect.Effect<unknown, EgressFailed> =>
  Effect.try({
    try: () => JSON.parse(text(response)) as unknown,
    catch: () => {
      const url = safeUrl(response.url)
      return new EgressFailed({
        reason: "bad_response",
        retryable: false,
        message: `${hostOf(response.url)} answered with a body that is not JSON`,
        url
      })
    }
  })

/** The `Egress.request` span's attributes (OpenTelemetry HTTP client conventions): never the path or the query. */
const spanAttributes = (req: EgressRequest): Record<string, string | number> => {
  try {
    const url = new URL(req.url)
    return {
      "http.request.method": req.method,
      "server.address": url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname,
      "server.port": defaultPort(url),
      "url.scheme": url.protocol.slice(0, -1)
    }
  } catch {
    return { "http.request.method": req.method, "server.address": "invalid-url" }
  }
}

/** The W3C `traceparent` of `span`: the upstream's spans become its children. */
const traceparent = (span: Tracer.AnySpan): string | undefined =>
  span.traceId.length === 32 && span.spanId.length === 16
    ? `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
    : undefined

// Caller headers that would change framing or the target; undici sets them itself.
const droppedHeaders = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
  "expect"
])

const crossOriginHeaders = ["authorization", "cookie", "proxy-authorization"]
const bodyHeaders = ["content-type", "content-encoding", "content-language", "content-location"]

// ---------------------------------------------------------------------------------------------------------------
// The guard

interface Target {
  readonly url: URL
  /** The checked address the connection is pinned to. */
  readonly address: string
}

/**
 * Every check of one hop, in an order that never touches the network for a refused URL: the policy's checks of the
 * URL, then DNS and every resolved address.
 */
const check = (
  raw: string | URL,
  allowHosts: ReadonlyArray<EgressPolicy.HostRule> | "any-public",
  operator: ReadonlyArray<EgressPolicy.HostRule>,
  deadline: Deadline
): Effect.Effect<Target, EgressDenied | EgressFailed> =>
  Effect.gen(function*() {
    const destination = yield* EgressPolicy.checkUrl(raw, allowHosts, operator)
    const { host, literal, url } = destination
    const addresses = literal !== undefined ? [literal] : (yield* lookup(host, url, deadline)).map((a) => a.address)
    const address = yield* EgressPolicy.checkAddresses(destination, addresses)
    return { url, address }
  })

/** The guard over the given settings; pools are destroyed when the scope closes. */
export const make = (settings: EgressSettings) =>
  Effect.gen(function*() {
    const operator: Array<EgressPolicy.HostRule> = []
    for (const entry of settings.operatorAllowHosts) {
      const rule = EgressPolicy.parseHostRule(entry)
      if (rule === undefined) return yield* Effect.dieMessage(`invalid operator allow-host entry: ${entry}`)
      operator.push(rule)
    }
    const pools = yield* Effect.acquireRelease(
      Effect.sync(() => makePools(Duration.toMillis(settings.connectTimeout))),
      (pools) => Effect.promise(pools.destroyAll)
    )

    const run = (
      req: EgressRequest,
      timeoutMs: number,
      maxBytes: number,
      deadline: Deadline,
      parent: string | undefined
    ) =>
      Effect.gen(function*() {
        const allowHosts = EgressPolicy.allowRules(req.allowHosts)
        let method = req.method
        let body = req.body
        const headers: Record<string, string> = {}
        for (const [name, value] of Object.entries(req.headers ?? {})) {
          const lower = name.toLowerCase()
          if (!droppedHeaders.has(lower)) headers[lower] = value
        }
        headers["accept-encoding"] ??= "gzip, deflate, br"
        if (parent !== undefined) headers["traceparent"] = parent
        let current: string | URL = req.url
        for (let redirects = 0;; redirects++) {
          const target = yield* check(current, allowHosts, operator, deadline)
          const url = target.url
          const options = { method, headers, body, timeoutMs, maxBytes }
          // fetch and body read in one promise, so a timeout or an interruption aborts both
          const hop = yield* abortable(
            deadline.remaining(),
            (signal) => exchange(pools.get(url, target.address), url, options, signal),
            (error) => failureOf(error, url, maxBytes, deadline)
          )
          if (hop.location === undefined || req.followRedirects === false) {
            yield* Effect.annotateCurrentSpan("http.response.status_code", hop.status)
            return { status: hop.status, headers: hop.headers, body: hop.body, url: url.href } satisfies EgressResponse
          }
          if (redirects >= settings.maxRedirects) {
            return yield* new EgressFailed({
              reason: "too_many_redirects",
              retryable: false,
              message: `more than ${settings.maxRedirects} redirects, starting at ${hostOf(req.url)}`,
              url: safeUrl(req.url)
            })
          }
          let next: URL
          try {
            next = new URL(hop.location, url)
          } catch {
            return yield* new EgressFailed({
              reason: "bad_response",
              retryable: false,
              message: `${url.host} redirected to an invalid location`,
              url: safeUrl(url)
            })
          }
          if (
            (hop.status === 303 && method !== "HEAD") ||
            ((hop.status === 301 || hop.status === 302) && method === "POST")
          ) {
            method = "GET"
            body = undefined
            for (const name of bodyHeaders) delete headers[name]
          }
          if (next.origin !== url.origin) {
            for (const name of crossOriginHeaders) delete headers[name]
            for (const name of req.credentialHeaders ?? []) delete headers[name.toLowerCase()]
          }
          current = next
        }
      })

    const request = (req: EgressRequest): Effect.Effect<EgressResponse, EgressDenied | EgressFailed> => {
      const timeoutMs = req.timeoutMs !== undefined && req.timeoutMs > 0
        ? req.timeoutMs
        : Duration.toMillis(settings.totalTimeout)
      const maxBytes = req.maxBytes !== undefined && req.maxBytes > 0 ? req.maxBytes : settings.maxResponseBytes
      const spanOptions = { kind: "client", attributes: spanAttributes(req), captureStackTrace: false } as const
      return Effect.useSpan("Egress.request", spanOptions, (span) => {
        const deadline = makeDeadline(req.url, timeoutMs)
        const parent = settings.propagateTraceContext ? traceparent(span) : undefined
        return Effect.withParentSpan(run(req, timeoutMs, maxBytes, deadline, parent), span)
      })
    }

    return Egress.of({ request })
  })

/** The guard, sharing one set of pinned connection pools that is closed with the layer's scope. */
export const layer: Layer.Layer<Egress, never, EgressConfig> = Layer.scoped(
  Egress,
  Effect.flatMap(EgressConfig, make)
)
