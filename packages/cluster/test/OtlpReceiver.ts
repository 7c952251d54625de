import { createServer, type Server } from "node:http"
import { fileURLToPath } from "node:url"
import protobuf from "protobufjs"

/**
 * A loopback OTLP/HTTP receiver, as a collector would be: `POST /v1/traces` and `POST /v1/metrics`, in protobuf
 * (`application/x-protobuf`) or JSON (`application/json`). Both are decoded with the official OTLP definitions
 * (`test/otlp`, protobufjs): protobuf as it is, JSON after turning its hex ids into bytes (OTLP/JSON's one departure
 * from the proto3 JSON mapping); both come out as the same plain data.
 */

const protoRoot = fileURLToPath(new URL("./otlp/", import.meta.url))
const root = new protobuf.Root()
root.resolvePath = (_origin, target) => `${protoRoot}${target}`
root.loadSync([
  "opentelemetry/proto/collector/trace/v1/trace_service.proto",
  "opentelemetry/proto/collector/metrics/v1/metrics_service.proto"
], { keepCase: false })
const TraceRequest = root.lookupType("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest")
const MetricsRequest = root.lookupType("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")
const TraceResponse = root.lookupType("opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse")
const MetricsResponse = root.lookupType("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse")

const idFields = new Set(["traceId", "spanId", "parentSpanId"])

/** OTLP/JSON's hex ids as the base64 that the proto3 JSON mapping (protobufjs `fromObject`) expects of bytes. */
const hexIdsToBase64 = (value: unknown, key?: string): unknown => {
  if (typeof value === "string" && key !== undefined && idFields.has(key)) {
    return Buffer.from(value, "hex").toString("base64")
  }
  if (Array.isArray(value)) return value.map((v) => hexIdsToBase64(v))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, hexIdsToBase64(v, k)]))
  }
  return value
}

/** A decoded message as plain data: ids as hex, 64-bit integers as strings, enums as numbers. */
const plain = (type: protobuf.Type, message: protobuf.Message): any => {
  const object = type.toObject(message, { longs: String, bytes: String, enums: Number, arrays: true, defaults: false })
  const hex = (value: unknown, key?: string): unknown => {
    if (typeof value === "string" && key !== undefined && idFields.has(key)) {
      return Buffer.from(value, "base64").toString("hex")
    }
    if (Array.isArray(value)) return value.map((v) => hex(v))
    if (typeof value === "object" && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, hex(v, k)]))
    }
    return value
  }
  return hex(object)
}

const decode = (type: protobuf.Type, contentType: string, body: Buffer) => {
  if (contentType.startsWith("application/x-protobuf")) return plain(type, type.decode(body))
  if (contentType.startsWith("application/json")) {
    const json = hexIdsToBase64(JSON.parse(body.toString("utf8"))) as Record<string, unknown>
    return plain(type, type.fromObject(json))
  }
  throw new Error(`unexpected content type ${contentType}`)
}

/** An `AnyValue` as plain data. */
export const anyValue = (value: any): unknown => {
  if (value === undefined || value === null) return undefined
  if ("stringValue" in value) return value.stringValue
  if ("boolValue" in value) return value.boolValue
  if ("intValue" in value) return Number(value.intValue)
  if ("doubleValue" in value) return value.doubleValue
  if ("arrayValue" in value) return (value.arrayValue.values ?? []).map(anyValue)
  if ("kvlistValue" in value) return attributesOf(value.kvlistValue.values)
  if ("bytesValue" in value) return value.bytesValue
  return undefined
}

/** A list of `KeyValue`s as a record. */
export const attributesOf = (list: ReadonlyArray<any> | undefined): Record<string, unknown> =>
  Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValue(kv.value)]))

export interface ExportedSpan {
  readonly service: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly name: string
  /** `SpanKind`: 1 internal, 2 server, 3 client. */
  readonly kind: number
  readonly attributes: Record<string, unknown>
  readonly status: { readonly code?: number; readonly message?: string }
}

export interface ExportedMetric {
  readonly service: string
  readonly name: string
  /** The data points' attributes. */
  readonly points: ReadonlyArray<Record<string, unknown>>
  readonly raw: any
}

export interface Export {
  readonly signal: "traces" | "metrics"
  readonly contentType: string
  /** The body as it arrived: searched for secrets byte for byte. */
  readonly body: Buffer
  readonly decoded: any
  readonly headers: Record<string, string | Array<string> | undefined>
}

export const startOtlpReceiver = async () => {
  const exports: Array<Export> = []
  const failures: Array<string> = []
  const server: Server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const contentType = req.headers["content-type"] ?? ""
      const signal = req.url === "/v1/traces" ? "traces" : req.url === "/v1/metrics" ? "metrics" : undefined
      if (req.method !== "POST" || signal === undefined) return void res.writeHead(404).end()
      try {
        const decoded = decode(signal === "traces" ? TraceRequest : MetricsRequest, contentType, body)
        exports.push({ signal, contentType, body, decoded, headers: req.headers })
      } catch (e) {
        failures.push(`${signal} ${contentType}: ${String(e)}`)
        return void res.writeHead(400).end()
      }
      const response = signal === "traces" ? TraceResponse : MetricsResponse
      if (contentType.startsWith("application/json")) {
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      } else {
        res.writeHead(200, { "content-type": "application/x-protobuf" })
          .end(Buffer.from(response.encode(response.create({})).finish()))
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as { port: number }).port

  const spans = (): Array<ExportedSpan> =>
    exports.filter((e) => e.signal === "traces").flatMap((e) =>
      (e.decoded.resourceSpans ?? []).flatMap((rs: any) => {
        const service = String(attributesOf(rs.resource?.attributes)["service.name"])
        return (rs.scopeSpans ?? []).flatMap((ss: any) =>
          (ss.spans ?? []).map((s: any): ExportedSpan => ({
            service,
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId === undefined || s.parentSpanId === "" ? undefined : s.parentSpanId,
            name: s.name,
            kind: s.kind ?? 0,
            attributes: attributesOf(s.attributes),
            status: s.status ?? {}
          }))
        )
      })
    )

  const metrics = (): Array<ExportedMetric> =>
    exports.filter((e) => e.signal === "metrics").flatMap((e) =>
      (e.decoded.resourceMetrics ?? []).flatMap((rm: any) => {
        const service = String(attributesOf(rm.resource?.attributes)["service.name"])
        return (rm.scopeMetrics ?? []).flatMap((sm: any) =>
          (sm.metrics ?? []).map((m: any): ExportedMetric => {
            const data = m.sum ?? m.gauge ?? m.histogram ?? m.exponentialHistogram ?? m.summary ?? {}
            return {
              service,
              name: m.name,
              points: (data.dataPoints ?? []).map((p: any) => attributesOf(p.attributes)),
              raw: m
            }
          })
        )
      })
    )

  return {
    url: `http://127.0.0.1:${port}`,
    exports,
    /** Bodies that could not be decoded (none is expected). */
    failures,
    spans,
    metrics,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
