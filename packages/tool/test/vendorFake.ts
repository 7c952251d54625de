import type { TenantId } from "@altan/domain/Ids"
import type { Credential, ToolFailed, ToolInputInvalid } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Egress, layer as egressLayer } from "../src/Egress.js"
import { EgressConfig } from "../src/EgressConfig.js"
import type { Tool, ToolContext } from "../src/Tool.js"

// Fake vendor APIs on real loopback sockets, reached through the real egress guard.

/** The credential every fake expects. */
export const TOKEN = "Bearer test-token"

/** The test tenant's credential, as the integrator hands it over. */
export const credential: Credential = { header: "Authorization", value: Redacted.make(TOKEN) }

/** One request as the fake received it, recorded before the handler answers. */
export interface Received {
  readonly method: string
  /** The path exactly as sent (still percent-encoded): a test must see what went over the wire. */
  readonly rawPath: string
  /** The raw path decoded, not normalised. */
  readonly path: string
  readonly query: URLSearchParams
  readonly headers: http.IncomingHttpHeaders
  readonly text: string
  /** The body parsed as JSON, or undefined. */
  readonly json: any
}

/** What the fake answers: `json` as JSON, else `text`, else an empty body. */
export interface Reply {
  readonly status?: number
  readonly json?: unknown
  readonly text?: string
  /** Sent last, so they override the JSON content-type. */
  readonly headers?: Readonly<Record<string, string>>
}

/** A running fake. */
export interface Fake {
  readonly url: string
  readonly port: number
  readonly received: Array<Received>
  /** Answers every request; a test may replace it. */
  handle: (request: Received) => Reply
  readonly close: () => Promise<void>
}

const parseJson = (text: string): unknown => {
  try {
    return text === "" ? undefined : JSON.parse(text)
  } catch {
    return undefined
  }
}

const decodePath = (rawPath: string): string => {
  try {
    return decodeURIComponent(rawPath)
  } catch {
    return rawPath
  }
}

/** Starts a fake on 127.0.0.1 with an ephemeral port, answering 404 until given a handler. */
export const startFake = async (handle: (request: Received) => Reply = () => ({ status: 404 })): Promise<Fake> => {
  const server = http.createServer(async (req, res) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString("utf8")
    const raw = req.url ?? "/"
    const q = raw.indexOf("?")
    const rawPath = q === -1 ? raw : raw.slice(0, q)
    const request: Received = {
      method: req.method ?? "",
      rawPath,
      path: decodePath(rawPath),
      query: new URLSearchParams(q === -1 ? "" : raw.slice(q + 1)),
      headers: req.headers,
      text,
      json: parseJson(text)
    }
    fake.received.push(request)
    let reply: Reply
    try {
      reply = fake.handle(request)
    } catch (error) {
      // No vendor answers 599: a failed assertion in a handler cannot pass for a vendor error.
      reply = { status: 599, text: `fake handler threw: ${String(error)}` }
    }
    res.writeHead(reply.status ?? 200, {
      ...(reply.json !== undefined ? { "content-type": "application/json; charset=utf-8" } : {}),
      ...reply.headers
    })
    res.end(reply.json !== undefined ? JSON.stringify(reply.json) : reply.text ?? "")
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  const fake: Fake = {
    url: `http://127.0.0.1:${port}`,
    port,
    received: [],
    handle,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
  return fake
}

/** A Google/Graph-style JSON error reply. */
export const jsonError = (status: number, error: Record<string, unknown>): Reply => ({ status, json: { error } })

/** How the test tenant and the operator are set up for a call. */
export interface Setup {
  /** What `ctx.baseUrl` returns for every provider. */
  readonly baseUrl?: string | undefined
  /** The test credential unless explicitly undefined. */
  readonly credential?: Credential | undefined
  /** `EGRESS_ALLOW_HOSTS`; 127.0.0.1 on any port unless given. */
  readonly operatorAllowHosts?: ReadonlyArray<string>
  /** The tenant's egress allowlist; the tool's hosts are added to it, as the tool worker does. */
  readonly allowHosts?: ReadonlyArray<string>
}

const withContext = <A, E>(tool: Tool, setup: Setup, f: (ctx: ToolContext) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const egress = yield* Egress
    const allowHosts = [...(setup.allowHosts ?? []), ...tool.hosts]
    const sent = "credential" in setup ? setup.credential : credential
    const credentialHeaders = sent ? [sent.header] : []
    return yield* f({
      tenantId: "t1" as TenantId,
      credential: sent,
      http: (req) => egress.request({ ...req, allowHosts, credentialHeaders }),
      baseUrl: () => setup.baseUrl,
      complete: () => Effect.die(new Error("this tool asked for an LLM"))
    })
  }).pipe(
    Effect.provide(
      egressLayer.pipe(
        Layer.provide(EgressConfig.layer({ operatorAllowHosts: setup.operatorAllowHosts ?? ["127.0.0.1"] }))
      )
    )
  )

/** Decodes then runs a tool as the tool service does, through the real egress guard. */
export const runTool = (tool: Tool, input: unknown, setup: Setup): Effect.Effect<any, ToolInputInvalid | ToolFailed> =>
  withContext(tool, setup, (ctx) => Effect.flatMap(tool.decode(input), (decoded) => tool.run(decoded, ctx)))

/** Runs without decoding first: shows what `run` itself does with hostile values. */
export const runUndecoded = (tool: Tool, input: unknown, setup: Setup): Effect.Effect<any, ToolFailed> =>
  withContext(tool, setup, (ctx) => tool.run(input, ctx))

/** The failure of a call that must fail (typed loosely: tests read fields of either error). */
export const failureOf = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<any> =>
  Effect.flip(effect).pipe(
    Effect.catchAll((value) => Effect.dieMessage(`expected a failure, got ${JSON.stringify(value)}`))
  )
