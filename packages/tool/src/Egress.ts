import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Tracer from "effect/Tracer"
import type * as IpAddr from "ipaddr.js"
import * as dns from "node:dns"
import { createRequire } from "node:module"
import * as net from "node:net"
import type { Readable } from "node:stream"
import { Transform, Writable } from "node:stream"
import { pipeline } from "node:stream/promises"
import * as zlib from "node:zlib"
import type { Dispatcher } from "undici"
import { buildConnector, Pool } from "undici"

// ipaddr.js is CommonJS with `export =`, which cannot be default-imported without allowSyntheticDefaultImports.
const ipaddr: typeof IpAddr = createRequire(import.meta.url)("ipaddr.js")

export {
  Egress,
  EgressDenied,
  EgressFailed,
  EgressFailureReason,
  type EgressMethod,
  type EgressRequest,
  type EgressResponse
} from "@altan/domain/Egress"
import {
  Egress,
  EgressDenied,
  EgressFailed,
  type EgressMethod,
  type EgressRequest,
  type EgressResponse
} from "@altan/domain/Egress"

/** Settings of the egress guard. */
export interface EgressSettings {
  /**
   * `EGRESS_ALLOW_HOSTS`: `host` or `host:port` entries the operator vouches for. The only way to reach
   * loopback or private addresses (local fakes); they also pass every tenant allowlist.
   */
  readonly operatorAllowHosts: ReadonlyArray<string>
  readonly connectTimeout: Duration.Duration
  /** DNS, connect, headers and body of every hop of one call. */
  readonly totalTimeout: Duration.Duration
  /** Largest response body, counted both on the wire and after decompression. */
  readonly maxResponseBytes: number
  readonly maxRedirects: number
  /**
   * `OTEL_PROPAGATE_UPSTREAM` (default `true`): every request carries the W3C `traceparent` of its `Egress.request`
   * span, so an upstream that traces (an LLM gateway, a tenant's own API) joins the task's trace.
   */
  readonly propagateTraceContext: boolean
}

/** Limits and the operator's allowlist of the egress guard. */
export class EgressConfig extends Context.Tag("@altan/tool/EgressConfig")<EgressConfig, EgressSettings>() {
  static readonly defaults: EgressSettings = {
    operatorAllowHosts: [],
    connectTimeout: Duration.seconds(10),
    totalTimeout: Duration.seconds(30),
    maxResponseBytes: 1024 * 1024,
    maxRedirects: 5,
    propagateTraceContext: true
  }

  static readonly layer = (options?: Partial<EgressSettings>): Layer.Layer<EgressConfig> =>
    Layer.succeed(EgressConfig, { ...EgressConfig.defaults, ...options })

  /**
   * `EGRESS_ALLOW_HOSTS` (comma-separated), `EGRESS_CONNECT_TIMEOUT`, `EGRESS_TOTAL_TIMEOUT` (e.g. `30 seconds`),
   * `EGRESS_MAX_RESPONSE_BYTES`, `EGRESS_MAX_REDIRECTS`.
   */
  static readonly config: Config.Config<EgressSettings> = Config.all({
    operatorAllowHosts: Config.string("EGRESS_ALLOW_HOSTS").pipe(
      Config.withDefault(""),
      Config.mapOrFail((raw) => {
        const entries = raw.split(",").map((s) => s.trim()).filter((s) => s !== "")
        const invalid = entries.find((entry) => parseHostRule(entry) === undefined)
        return invalid === undefined
          ? Either.right(entries)
          : Either.left(ConfigError.InvalidData([], `invalid EGRESS_ALLOW_HOSTS entry: ${invalid}`))
      }),
      Config.withDescription("host or host:port entries that may be reached even on private addresses.")
    ),
    connectTimeout: Config.duration("EGRESS_CONNECT_TIMEOUT").pipe(
      Config.withDefault(EgressConfig.defaults.connectTimeout)
    ),
    totalTimeout: Config.duration("EGRESS_TOTAL_TIMEOUT").pipe(Config.withDefault(EgressConfig.defaults.totalTimeout)),
    maxResponseBytes: Config.integer("EGRESS_MAX_RESPONSE_BYTES").pipe(
      Config.withDefault(EgressConfig.defaults.maxResponseBytes)
    ),
    maxRedirects: Config.integer("EGRESS_MAX_REDIRECTS").pipe(Config.withDefault(EgressConfig.defaults.maxRedirects)),
    propagateTraceContext: Config.boolean("OTEL_PROPAGATE_UPSTREAM").pipe(
      Config.withDefault(EgressConfig.defaults.propagateTraceContext),
      Config.withDescription("whether outbound requests carry the W3C traceparent of their span.")
    )
  })

  static readonly layerConfig: Layer.Layer<EgressConfig, ConfigError.ConfigError> = Layer.effect(
    EgressConfig,
    EgressConfig.config
  )
}

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

// ---------------------------------------------------------------------------------------------------------------
// Host rules

interface HostRule {
  /** As the WHATWG URL parser writes it (lower case, punycode, dotted-quad, `[v6]`), without a trailing dot. */
  readonly host: string
  readonly port: number | undefined
  readonly subdomains: boolean
}

const stripDot = (host: string) => (host.endsWith(".") ? host.slice(0, -1) : host)

const isIpHost = (host: string) => host.startsWith("[") || net.isIPv4(host)

/** `host`, `host:port`, `[v6]:port`, bare v6 or `*.domain[:port]`; undefined when malformed. */
const parseHostRule = (entry: string): HostRule | undefined => {
  let s = entry.trim().toLowerCase()
  const subdomains = s.startsWith("*.")
  if (subdomains) s = s.slice(2)
  let host = s
  let portText: string | undefined
  const bracketed = /^(\[[^\]]+\])(?::(\d+))?$/.exec(s)
  if (bracketed) {
    host = bracketed[1]!
    portText = bracketed[2]
  } else if (net.isIPv6(s)) {
    host = `[${s}]`
  } else if (s.includes(":")) {
    const i = s.lastIndexOf(":")
    host = s.slice(0, i)
    portText = s.slice(i + 1)
  }
  if (host === "" || /[/?#@\\\s]/.test(host)) return undefined
  if (portText !== undefined && !/^\d{1,5}$/.test(portText)) return undefined
  const port = portText === undefined ? undefined : Number(portText)
  if (port !== undefined && (port < 1 || port > 65535)) return undefined
  let normalized: string
  try {
    // Normalised exactly as request URLs are, so `127.1` and `127.0.0.1` are one rule.
    const parsed = new URL(`http://${host}/`)
    if (parsed.port !== "" || parsed.username !== "" || parsed.pathname !== "/") return undefined
    normalized = stripDot(parsed.hostname)
  } catch {
    return undefined
  }
  if (normalized === "" || (subdomains && isIpHost(normalized))) return undefined
  return { host: normalized, port, subdomains }
}

// Tenants' allowlists and vendor host lists repeat on every call; parse each entry once.
const parsedRules = new Map<string, HostRule | undefined>()
const cachedRule = (entry: string): HostRule | undefined => {
  if (parsedRules.has(entry)) return parsedRules.get(entry)
  const rule = parseHostRule(entry)
  if (parsedRules.size >= 10_000) parsedRules.clear()
  parsedRules.set(entry, rule)
  return rule
}

const ruleMatches = (rule: HostRule, host: string, port: number) =>
  (rule.port === undefined || rule.port === port) &&
  (rule.subdomains ? host.endsWith(`.${rule.host}`) : host === rule.host)

// Cloud metadata services answer with credentials; no allowlist reaches them.
const metadataNames = new Set(["metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"])

// ---------------------------------------------------------------------------------------------------------------
// Addresses

const v4Reasons: Record<string, string> = {
  unspecified: "unspecified",
  broadcast: "broadcast",
  multicast: "multicast",
  linkLocal: "link-local",
  loopback: "loopback",
  carrierGradeNat: "carrier-grade NAT (100.64.0.0/10)",
  private: "private",
  reserved: "reserved",
  as112: "reserved (AS112)",
  amt: "reserved (AMT)"
}

const v6Reasons: Record<string, string> = {
  unspecified: "unspecified",
  linkLocal: "link-local",
  multicast: "multicast",
  loopback: "loopback",
  uniqueLocal: "unique-local (fc00::/7)",
  deprecatedSiteLocal: "site-local (fec0::/10)",
  discard: "a discard prefix",
  rfc6145: "IPv4-translated (RFC 6145)",
  rfc6052: "NAT64 (RFC 6052)",
  "6to4": "6to4 (may embed a private IPv4 address)",
  teredo: "Teredo (may embed a private IPv4 address)",
  reserved: "reserved"
}

/** Why the address must not be reached, or undefined for a public unicast address. */
const addressProblem = (address: string): string | undefined => {
  let ip: IpAddr.IPv4 | IpAddr.IPv6
  try {
    ip = ipaddr.parse(address)
  } catch {
    return "not an IP address"
  }
  if (ip instanceof ipaddr.IPv6) {
    if (ip.isIPv4MappedAddress()) {
      const v4 = ip.toIPv4Address()
      const inner = addressProblem(v4.toString())
      return inner === undefined ? undefined : `IPv4-mapped ${v4.toString()}, which is ${inner}`
    }
    const range = ip.range()
    if (range !== "unicast") return v6Reasons[range] ?? `special-purpose (${range})`
    // Only 2000::/3 is allocated as global unicast; the rest (e.g. IPv4-compatible ::a.b.c.d) is not reachable.
    if ((ip.parts[0]! & 0xe000) !== 0x2000) return "not global unicast"
    return undefined
  }
  const range = ip.range()
  return range === "unicast" ? undefined : v4Reasons[range] ?? `special-purpose (${range})`
}

/** The URL without userinfo, query or fragment: safe for errors and logs. */
const safeUrl = (raw: string | URL): string => {
  try {
    const url = new URL(raw)
    url.username = ""
    url.password = ""
    url.search = ""
    url.hash = ""
    return url.href
  } catch {
    return String(raw).split(/[?#]/)[0]!.replace(/\/\/[^/@]*@/, "//")
  }
}

const hostOf = (raw: string): string => {
  try {
    return new URL(raw).host
  } catch {
    return "invalid-url"
  }
}

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

// ---------------------------------------------------------------------------------------------------------------
// The guard

interface Target {
  readonly url: URL
  /** The checked address the connection is pinned to. */
  readonly address: string
}

const defaultPort = (url: URL) => (url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80)

const lookup = (host: string, url: URL, deadline: Deadline) =>
  Effect.async<ReadonlyArray<dns.LookupAddress>, EgressFailed>((resume) => {
    // dns.lookup cannot be cancelled; past the deadline its answer is ignored
    const timer = setTimeout(() => resume(Effect.fail(deadline.failure())), deadline.remaining())
    dns.lookup(host, { all: true, verbatim: true }, (error, addresses) => {
      clearTimeout(timer)
      if (error || addresses.length === 0) {
        resume(Effect.fail(
          new EgressFailed({
            reason: "connect",
            retryable: true,
            message: `${host} could not be resolved${error?.code ? ` (${error.code})` : ""}`,
            url: safeUrl(url)
          })
        ))
      } else {
        resume(Effect.succeed(addresses))
      }
    })
    return Effect.sync(() => clearTimeout(timer))
  })

/**
 * The total time limit of one request, redirects and DNS included. Plain timers, one per wait: racing an
 * Effect timeout fiber cost more than the whole guarded request on loopback.
 */
interface Deadline {
  readonly remaining: () => number
  readonly failure: () => EgressFailed
}

/**
 * Every check of one hop, in an order that never touches the network for a refused URL: scheme, userinfo,
 * names, allowlists, then DNS and every resolved address.
 */
const check = (
  raw: string | URL,
  allowHosts: ReadonlyArray<HostRule> | "any-public",
  operator: ReadonlyArray<HostRule>,
  deadline: Deadline
): Effect.Effect<Target, EgressDenied | EgressFailed> =>
  Effect.gen(function*() {
    let url: URL
    try {
      // The WHATWG parser normalises numeric hosts (`2130706433`, `0x7f000001`, `127.1`) to dotted-quad.
      url = new URL(raw)
    } catch {
      return yield* new EgressDenied({ message: "invalid URL", url: safeUrl(raw) })
    }
    const denied = (message: string) => new EgressDenied({ message, url: safeUrl(url) })
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return yield* denied(`${url.protocol} URLs are not allowed (only http and https)`)
    }
    if (url.username !== "" || url.password !== "") {
      return yield* denied(`URLs with userinfo are not allowed (host ${url.hostname})`)
    }
    const host = stripDot(url.hostname)
    const port = defaultPort(url)
    if (host === "") return yield* denied("URL has no host")
    if (metadataNames.has(host)) return yield* denied(`${host} is a cloud metadata endpoint`)
    const operatorAllowed = operator.some((rule) => ruleMatches(rule, host, port))
    if (!operatorAllowed) {
      if (host.endsWith(".internal")) return yield* denied(`${host} is an internal name`)
      if (allowHosts !== "any-public" && !allowHosts.some((rule) => ruleMatches(rule, host, port))) {
        return yield* denied(`${url.host} is not in the allowed hosts`)
      }
    }
    const literal = host.startsWith("[") ? host.slice(1, -1) : net.isIPv4(host) ? host : undefined
    const addresses = literal !== undefined ? [literal] : (yield* lookup(host, url, deadline)).map((a) => a.address)
    if (!operatorAllowed) {
      for (const address of addresses) {
        const problem = addressProblem(address)
        if (problem !== undefined) {
          return yield* denied(
            literal !== undefined ? `${host} is ${problem}` : `${host} resolves to ${address}, which is ${problem}`
          )
        }
      }
    }
    return { url, address: addresses[0]! }
  })

class TooLarge extends Error {}
class TimedOut extends Error {}

/**
 * The promise as an Effect that aborts it through its signal when interrupted or once `ms` pass (then
 * rejecting with `TimedOut`): one controller and one timer per hop.
 */
const abortable = <A, E>(
  ms: number,
  f: (signal: AbortSignal) => Promise<A>,
  onError: (error: unknown) => E
): Effect.Effect<A, E> =>
  Effect.async<A, E>((resume) => {
    const controller = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      controller.abort()
    }, ms)
    f(controller.signal).then(
      (value) => {
        clearTimeout(timer)
        resume(Effect.succeed(value))
      },
      (error) => {
        clearTimeout(timer)
        resume(Effect.fail(onError(timedOut ? new TimedOut() : error)))
      }
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      controller.abort()
    })
  })
class BadResponse extends Error {}

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

const flatten = (headers: Record<string, string | Array<string> | undefined>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value
  }
  return out
}

const decoderFor = (encoding: string): Transform => {
  switch (encoding) {
    case "gzip":
    case "x-gzip":
      // Lenient like browsers: a truncated trailer is not worth failing the call.
      return zlib.createGunzip({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
    case "deflate":
      return zlib.createInflate({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
    case "br":
      return zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH })
    default:
      throw new BadResponse(`unsupported content-encoding ${encoding}`)
  }
}

const counter = (max: number) => {
  let seen = 0
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length
      if (seen > max) callback(new TooLarge())
      else callback(null, chunk)
    }
  })
}

/**
 * An unencoded body, read chunk by chunk and dropped as soon as it passes `max` (the common case, kept cheap:
 * plain listeners rather than an async iterator, which costs promises per chunk on every call).
 */
const readPlain = (body: Readable, max: number) =>
  new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let total = 0
    body.on("data", (chunk: Buffer) => {
      total += chunk.length
      if (total > max) {
        body.destroy()
        reject(new TooLarge())
      } else {
        chunks.push(chunk)
      }
    })
    body.once("end", () => resolve(Buffer.concat(chunks, total)))
    body.once("error", reject)
  })

/**
 * Streams the body through the decoders, failing as soon as either the wire bytes or the decoded bytes pass `max`;
 * backpressure keeps a decompression bomb from inflating more than a chunk ahead of the cap.
 */
const readBody = async (body: Readable, encodings: ReadonlyArray<string>, max: number, signal: AbortSignal) => {
  if (encodings.length === 0) return readPlain(body, max)
  let decoders: Array<Transform>
  try {
    decoders = encodings.slice().reverse().map(decoderFor)
  } catch (error) {
    body.destroy()
    throw error
  }
  let decodeFailed = false
  for (const decoder of decoders) decoder.once("error", () => (decodeFailed = true))
  const chunks: Array<Buffer> = []
  let total = 0
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      total += chunk.length
      if (total > max) return callback(new TooLarge())
      chunks.push(chunk)
      callback()
    }
  })
  try {
    await pipeline([body, counter(max), ...decoders, sink], { signal })
  } catch (error) {
    if (decodeFailed && !(error instanceof TooLarge)) throw new BadResponse("the body could not be decompressed")
    throw error
  }
  return Buffer.concat(chunks, total)
}

interface Hop {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Uint8Array
  readonly location: string | undefined
}

const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const exchange = async (
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

// No connection was made, so nothing was sent: safe to try again whatever the request does.
const notConnected = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT"
])

const tlsRejections = new Set([
  "CERT_HAS_EXPIRED",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "ERR_TLS_CERT_ALTNAME_INVALID"
])

/** Maps what a hop threw to a typed failure; never includes request headers or bodies. */
const failureOf = (error: unknown, url: URL, maxBytes: number, deadline: Deadline): EgressFailed => {
  if (error instanceof TimedOut) return deadline.failure()
  const where = { url: safeUrl(url) }
  if (error instanceof TooLarge) {
    return new EgressFailed({
      reason: "too_large",
      retryable: false,
      message: `${url.host} sent more than ${maxBytes} bytes`,
      ...where
    })
  }
  if (error instanceof BadResponse) {
    return new EgressFailed({
      reason: "bad_response",
      retryable: false,
      message: `${url.host}: ${error.message}`,
      ...where
    })
  }
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : undefined
  if (code !== undefined && notConnected.has(code)) {
    return new EgressFailed({
      reason: "connect",
      retryable: true,
      message: `${url.host} could not be reached (${code})`,
      ...where
    })
  }
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return new EgressFailed({
      reason: "timeout",
      retryable: true,
      message: `${url.host} timed out (${code})`,
      ...where
    })
  }
  if (code !== undefined && (code.startsWith("HPE_") || code === "UND_ERR_RES_CONTENT_LENGTH_MISMATCH")) {
    return new EgressFailed({
      reason: "bad_response",
      retryable: false,
      message: `${url.host} sent a malformed response (${code})`,
      ...where
    })
  }
  if (code === "UND_ERR_INVALID_ARG") {
    // A header name or value undici refuses (e.g. a line break); trying again cannot help.
    return new EgressFailed({
      reason: "network",
      retryable: false,
      message: `invalid request to ${url.host}`,
      ...where
    })
  }
  if (code !== undefined && tlsRejections.has(code)) {
    return new EgressFailed({
      reason: "network",
      retryable: true,
      message: `${url.host} presented a certificate that does not verify (${code})`,
      ...where
    })
  }
  return new EgressFailed({
    reason: "network",
    retryable: true,
    message: `request to ${url.host} failed${code ? ` (${code})` : ""}`,
    ...where
  })
}

// Pools kept for reuse; each connects only to its one checked address.
const maxPools = 256

/**
 * Connection pools keyed by origin and checked address. A pool's connector ignores DNS and dials the pinned
 * address, while TLS still sends SNI and verifies the certificate for the URL's hostname.
 */
const makePools = (connectTimeoutMs: number) => {
  const connector = buildConnector({ timeout: connectTimeoutMs })
  const pools = new Map<string, Pool>()
  const get = (url: URL, address: string): Pool => {
    const key = `${url.origin} ${address}`
    const cached = pools.get(key)
    if (cached !== undefined && !cached.closed && !cached.destroyed) {
      pools.delete(key)
      pools.set(key, cached)
      return cached
    }
    const hostname = stripDot(url.hostname)
    const servername = isIpHost(hostname) ? undefined : hostname
    const pool = new Pool(url.origin, {
      connect: (options, callback) =>
        connector({ ...options, hostname: address, ...(servername ? { servername } : {}) }, callback)
    })
    pools.set(key, pool)
    if (pools.size > maxPools) {
      const [oldestKey, oldest] = pools.entries().next().value!
      pools.delete(oldestKey)
      // close() lets requests already queued on it finish.
      oldest.close().catch(() => undefined)
    }
    return pool
  }
  const destroyAll = () => Promise.allSettled([...pools.values()].map((pool) => pool.destroy()))
  return { get, destroyAll }
}

/** The guard over the given settings; pools are destroyed when the scope closes. */
export const make = (settings: EgressSettings) =>
  Effect.gen(function*() {
    const operator: Array<HostRule> = []
    for (const entry of settings.operatorAllowHosts) {
      const rule = parseHostRule(entry)
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
        const allowHosts = req.allowHosts === "any-public"
          ? "any-public" as const
          : req.allowHosts.flatMap((entry) => cachedRule(entry) ?? [])
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
        const end = Date.now() + timeoutMs
        const deadline: Deadline = {
          remaining: () => Math.max(0, end - Date.now()),
          failure: () =>
            new EgressFailed({
              reason: "timeout",
              retryable: true,
              message: `${hostOf(req.url)} did not answer within ${timeoutMs} ms`,
              url: safeUrl(req.url)
            })
        }
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
