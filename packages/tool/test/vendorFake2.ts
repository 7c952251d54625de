import type { TenantId } from "@altan/domain/Ids"
import type { Credential } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Egress, EgressConfig, layer as egressLayer } from "../src/Egress.js"
import type { Tool, ToolContext } from "../src/Tool.js"

// Fake vendors on real loopback sockets; every request is recorded before the handler answers it.

/** One request a fake received. */
export interface Seen {
  readonly method: string
  readonly path: string
  readonly query: URLSearchParams
  readonly headers: http.IncomingHttpHeaders
  readonly text: string
  readonly json: unknown
}

/** What a fake answers. */
export interface Reply {
  readonly status?: number
  readonly json?: unknown
  readonly text?: string
  readonly headers?: Record<string, string>
}

export interface Fake {
  readonly port: number
  readonly baseUrl: string
  readonly seen: Array<Seen>
  /** Replaces the handler (per test). */
  handle: (req: Seen) => Reply
  readonly close: () => Promise<void>
}

export const TOKEN = "Bearer test-token"

/** A credential as the integrator hands it over. */
export const credential: Credential = { header: "Authorization", value: Redacted.make(TOKEN) }

/** Starts a fake on 127.0.0.1 with an ephemeral port. */
export const startFake = async (handle: (req: Seen) => Reply = () => ({ status: 404 })): Promise<Fake> => {
  const seen: Array<Seen> = []
  const state = { handle }
  const server = http.createServer(async (req, res) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString("utf8")
    let json: unknown = undefined
    try {
      json = text === "" ? undefined : JSON.parse(text)
    } catch {
      json = undefined
    }
    // The raw path, not a normalised one: a test must see what went over the wire.
    const raw = req.url ?? "/"
    const q = raw.indexOf("?")
    const entry: Seen = {
      method: req.method ?? "",
      path: q === -1 ? raw : raw.slice(0, q),
      query: new URLSearchParams(q === -1 ? "" : raw.slice(q + 1)),
      headers: req.headers,
      text,
      json
    }
    seen.push(entry)
    let reply: Reply
    try {
      reply = state.handle(entry)
    } catch (error) {
      reply = { status: 500, text: `fake handler threw: ${String(error)}` }
    }
    const body = reply.json !== undefined ? JSON.stringify(reply.json) : reply.text ?? ""
    res.writeHead(reply.status ?? 200, {
      ...(reply.json !== undefined ? { "content-type": "application/json; charset=UTF-8" } : {}),
      ...reply.headers
    })
    res.end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    seen,
    get handle() {
      return state.handle
    },
    set handle(h) {
      state.handle = h
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

/** A Google/Graph-style JSON error reply. */
export const jsonError = (status: number, error: Record<string, unknown>): Reply => ({ status, json: { error } })

/**
 * Runs `f` with a context whose `http` is the REAL egress guard: the operator allows `operatorAllowHosts`,
 * the tenant allowlist is `allowHosts`.
 */
export const withContext = <A, E>(
  options: {
    readonly operatorAllowHosts: ReadonlyArray<string>
    readonly allowHosts?: ReadonlyArray<string>
    readonly baseUrl?: string
    readonly credential?: Credential
    readonly tool?: Tool
  },
  f: (ctx: ToolContext) => Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const egress = yield* Egress
    const ctx: ToolContext = {
      tenantId: "t1" as TenantId,
      ...(options.credential !== undefined ? { credential: options.credential } : {}),
      http: (req) =>
        egress.request({ ...req, allowHosts: [...(options.allowHosts ?? []), ...(options.tool?.hosts ?? [])] }),
      baseUrl: () => options.baseUrl,
      complete: () => Effect.die(new Error("this tool asked for an LLM"))
    }
    return yield* f(ctx)
  }).pipe(
    Effect.provide(
      egressLayer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: options.operatorAllowHosts })))
    )
  )

/** Decodes then runs, as the tool service does. */
export const run = (tool: Tool, input: unknown, ctx: ToolContext) =>
  Effect.flatMap(tool.decode(input), (decoded) => tool.run(decoded, ctx))

/** Calls a vendor tool against a fake, with the test credential unless `credential: undefined` is wanted. */
export const callVendor = (
  fake: Fake,
  tool: Tool,
  input: unknown,
  options: { readonly withCredential?: boolean } = {}
) =>
  withContext(
    {
      operatorAllowHosts: ["127.0.0.1"],
      baseUrl: fake.baseUrl,
      tool,
      ...(options.withCredential === false ? {} : { credential })
    },
    (ctx) => run(tool, input, ctx)
  )
