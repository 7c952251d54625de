import type { TenantId } from "@altan/domain/Ids"
import type { Credential, ToolFailed, ToolInputInvalid } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Egress, EgressConfig, layer as egressLayer } from "../src/Egress.js"
import type { Tool, ToolContext } from "../src/Tool.js"

// Fake vendor APIs on real loopback sockets, reached through the real egress guard.

/** The credential every fake expects. */
export const TOKEN = "Bearer test-token"

/** The test tenant's credential, as the integrator hands it over. */
export const credential: Credential = { header: "Authorization", value: Redacted.make(TOKEN) }

/** One request as the fake received it. */
export interface Received {
  readonly method: string
  /** The path exactly as sent (still percent-encoded). */
  readonly rawPath: string
  /** The decoded path. */
  readonly path: string
  readonly query: URLSearchParams
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  /** The body parsed as JSON, or undefined. */
  readonly json: any
}

/** What the fake answers: a JSON body unless `body` is a string; no body when undefined. */
export interface Reply {
  readonly status?: number
  readonly body?: unknown
  readonly headers?: Readonly<Record<string, string>>
}

/** A running fake. */
export interface Fake {
  readonly url: string
  readonly received: Array<Received>
  readonly close: () => Promise<void>
}

/** Starts a fake on 127.0.0.1 answering every request with `handle`. */
export const startFake = async (handle: (request: Received) => Reply): Promise<Fake> => {
  const received: Array<Received> = []
  const server = http.createServer(async (req, res) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks).toString()
    const url = new URL(req.url!, "http://fake")
    let json: unknown
    try {
      json = body === "" ? undefined : JSON.parse(body)
    } catch {
      json = undefined
    }
    const request: Received = {
      method: req.method!,
      rawPath: req.url!.split("?")[0]!,
      path: decodeURIComponent(url.pathname),
      query: url.searchParams,
      headers: req.headers,
      body,
      json
    }
    received.push(request)
    let reply: Reply
    try {
      reply = handle(request)
    } catch (error) {
      reply = { status: 599, body: { fake_error: String(error) } }
    }
    res.statusCode = reply.status ?? 200
    for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value)
    if (reply.body === undefined) return res.end()
    if (typeof reply.body === "string") return res.end(reply.body)
    res.setHeader("content-type", "application/json; charset=utf-8")
    res.end(JSON.stringify(reply.body))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** How the test tenant is set up for a call. */
export interface Setup {
  /** The base URL `ctx.baseUrl` returns for every provider. */
  readonly baseUrl: string | undefined
  /** The credential; the test credential unless explicitly undefined. */
  readonly credential?: Credential | undefined
}

const egress = egressLayer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: ["127.0.0.1"] })))

/** Decodes then runs a tool as the tool service does, with the real egress guard bound to 127.0.0.1. */
export const runTool = (
  tool: Tool,
  input: unknown,
  setup: Setup
): Effect.Effect<any, ToolInputInvalid | ToolFailed> =>
  Effect.gen(function*() {
    const guard = yield* Egress
    const ctx: ToolContext = {
      tenantId: "t1" as TenantId,
      credential: "credential" in setup ? setup.credential : credential,
      http: (req) => guard.request({ ...req, allowHosts: ["127.0.0.1"] }),
      baseUrl: () => setup.baseUrl,
      complete: () => Effect.die(new Error("this tool asked for an LLM"))
    }
    const decoded = yield* tool.decode(input)
    return yield* tool.run(decoded, ctx)
  }).pipe(Effect.provide(egress))

/** Runs without decoding first: shows what `run` itself does with hostile values. */
export const runUndecoded = (tool: Tool, input: unknown, setup: Setup): Effect.Effect<any, ToolFailed> =>
  Effect.gen(function*() {
    const guard = yield* Egress
    return yield* tool.run(input, {
      tenantId: "t1" as TenantId,
      credential,
      http: (req) => guard.request({ ...req, allowHosts: ["127.0.0.1"] }),
      baseUrl: () => setup.baseUrl,
      complete: () => Effect.die(new Error("this tool asked for an LLM"))
    })
  }).pipe(Effect.provide(egress))

/** The failure of a call that must fail (typed loosely: tests read fields of either error). */
export const failureOf = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<any> =>
  Effect.flip(effect).pipe(
    Effect.catchAll((value) => Effect.dieMessage(`expected a failure, got ${JSON.stringify(value)}`))
  )
