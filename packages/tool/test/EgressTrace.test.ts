import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { make } from "../src/Egress.js"
import { EgressConfig } from "../src/EgressConfig.js"

/**
 * W3C trace context on outbound calls: every request through the egress guard carries the `traceparent` of its
 * `Egress.request` span (the upstream's own spans join the task's trace), unless the operator turns it off with
 * `OTEL_PROPAGATE_UPSTREAM=false`. A loopback upstream records what it receives.
 */
const received: Array<http.IncomingHttpHeaders> = []
let server: http.Server
let url = ""

beforeAll(async () => {
  server = http.createServer((req, res) => {
    received.push(req.headers)
    res.writeHead(200, { "content-type": "application/json" }).end("{}")
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

/** One call through a guard configured from `env` (as the runtime reads it), inside a span of the caller's. */
const callWith = (env: Record<string, string>, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const settings = yield* Effect.withConfigProvider(
      EgressConfig.config,
      ConfigProvider.fromMap(new Map(Object.entries(env)))
    )
    const egress = yield* make({ ...settings, operatorAllowHosts: [new URL(url).host] })
    const spans: Array<Tracer.Span> = []
    const native = yield* Effect.tracer
    const recording = Tracer.make({
      span: (...args) => {
        const span = native.span(...args)
        spans.push(span)
        return span
      },
      context: native.context
    })
    received.length = 0
    const caller = yield* Effect.gen(function*() {
      yield* egress.request({ url, method: "POST", headers, body: "{}", allowHosts: "any-public" })
      return yield* Effect.currentSpan
    }).pipe(Effect.withSpan("caller"), Effect.withTracer(recording))
    return { caller, request: spans.find((s) => s.name === "Egress.request")!, headers: received[0]! }
  }).pipe(Effect.scoped)

describe("trace context on outbound calls", () => {
  it.live("sends the traceparent of the Egress.request span, a child of the caller's", () =>
    Effect.gen(function*() {
      const { caller, headers, request } = yield* callWith({}, { traceparent: "00-tenant-chose-this-01" })
      expect(request.traceId).toBe(caller.traceId)
      expect(request.parent).toMatchObject({ _tag: "Some", value: { spanId: caller.spanId } })
      expect(headers.traceparent).toBe(`00-${request.traceId}-${request.spanId}-01`)
      expect(headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
      expect(request.kind).toBe("client")
      expect(Object.fromEntries(request.attributes)).toEqual({
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": Number(new URL(url).port),
        "url.scheme": "http",
        "http.response.status_code": 200
      })
    }))

  it.live("sends none with OTEL_PROPAGATE_UPSTREAM=false (a caller's own header passes as it is)", () =>
    Effect.gen(function*() {
      expect((yield* callWith({ OTEL_PROPAGATE_UPSTREAM: "false" })).headers.traceparent).toBeUndefined()
      const own = yield* callWith({ OTEL_PROPAGATE_UPSTREAM: "false" }, { traceparent: "00-tenant-chose-this-01" })
      expect(own.headers.traceparent).toBe("00-tenant-chose-this-01")
    }))
})
