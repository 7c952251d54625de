import type * as AgentConfig from "@altan/agent/AgentConfig"
import * as AgentService from "@altan/agent/AgentService"
import * as MemorySink from "@altan/audit/MemorySink"
import * as Readiness from "@altan/domain/Readiness"
import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Admission from "@altan/integrator/Admission"
import * as AuthConfig from "@altan/integrator/AuthConfig"
import * as DevIssuer from "@altan/integrator/DevIssuer"
import * as EdgeServer from "@altan/integrator/EdgeServer"
import { HttpEdgeLive } from "@altan/integrator/HttpEdge"
import * as IntegratorConfig from "@altan/integrator/IntegratorConfig"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import type * as LlmGateway from "@altan/integrator/LlmGateway"
import type * as Resilience from "@altan/integrator/Resilience"
import * as TokenVerifier from "@altan/integrator/TokenVerifier"
import * as Redis from "@altan/redis/Redis"
import type * as ExecutionLedger from "@altan/tool/ExecutionLedger"
import * as Tool from "@altan/tool/Tool"
import * as ToolService from "@altan/tool/ToolService"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as jose from "jose"
import { createPublicKey } from "node:crypto"
import { clusterRoundTrip, ShardingMemory } from "../src/Runtime.js"

/**
 * Probe tools registered beside the built-ins. They run inside the real ToolWorker, reached through
 * the real AgentSession -> Connection -> ToolWorker path, and record what happened to them.
 */
export const makeProbes = () => {
  const waiters: Array<{ readonly tool: string; readonly resolve: () => void }> = []
  const calls: Array<{ tool: string; input: unknown }> = []
  /** Notes a call, and wakes whoever waits for its tool. */
  const record = (call: { tool: string; input: unknown }) => {
    calls.push(call)
    for (const w of waiters.filter((w) => w.tool === call.tool)) {
      waiters.splice(waiters.indexOf(w), 1)
      w.resolve()
    }
  }
  let inFlight = 0
  let maxInFlight = 0
  let bothIn = Deferred.unsafeMake<void>(undefined as any)
  const barrier = Tool.make({
    id: "probe.barrier",
    name: "barrier",
    description: "Waits until two calls are in flight at once (or 5 s), then answers its label.",
    input: Schema.Struct({ label: Schema.String }),
    output: Schema.Struct({ label: Schema.String, concurrent: Schema.Number }),
    run: ({ label }) =>
      Effect.gen(function*() {
        record({ tool: "probe.barrier", input: { label } })
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        if (inFlight >= 2) yield* Deferred.succeed(bothIn, void 0)
        yield* Deferred.await(bothIn).pipe(Effect.timeout("5 seconds"), Effect.ignore)
        const concurrent = maxInFlight
        inFlight--
        return { label, concurrent }
      })
  })
  const echo = Tool.make({
    id: "probe.echo",
    name: "echo",
    description: "Answers its input.",
    input: Schema.Struct({ value: Schema.Unknown }),
    output: Schema.Struct({ value: Schema.Unknown, nested: Schema.Struct({ list: Schema.Array(Schema.Number) }) }),
    run: ({ value }) =>
      Effect.sync(() => {
        record({ tool: "probe.echo", input: { value } })
        return { value, nested: { list: [1, 2, 3] } }
      })
  })
  const fail = Tool.make({
    id: "probe.fail",
    name: "fail",
    description: "Always fails.",
    input: Schema.Struct({}),
    output: Schema.Struct({}),
    run: () =>
      Effect.suspend(() => {
        record({ tool: "probe.fail", input: {} })
        return Effect.fail(
          new ToolFailed({ tool_id: "probe.fail", message: "upstream said no", retryable: false, status: 400 })
        )
      })
  })
  const hang = Tool.make({
    id: "probe.hang",
    name: "hang",
    description: "Never answers.",
    input: Schema.Struct({}),
    output: Schema.Struct({}),
    run: () =>
      Effect.suspend(() => {
        record({ tool: "probe.hang", input: {} })
        return Effect.never
      })
  })
  const effect = Tool.make({
    id: "probe.effect",
    name: "effect",
    description: "A write with a side effect (counted per label), answered after `ms`.",
    input: Schema.Struct({ label: Schema.String, ms: Schema.optionalWith(Schema.Number, { default: () => 0 }) }),
    output: Schema.Struct({ label: Schema.String, n: Schema.Number }),
    sideEffect: true,
    run: ({ label, ms }) =>
      Effect.gen(function*() {
        record({ tool: "probe.effect", input: { label } })
        const n = calls.filter((c) =>
          c.tool === "probe.effect" && (c.input as { label: string }).label === label
        ).length
        yield* Effect.sleep(ms)
        return { label, n }
      })
  })
  const interrupted = new Map<string, number>()
  const interruptFirst = Tool.make({
    id: "probe.interrupt_first",
    name: "interrupt first",
    description:
      "Its first `times` calls for a label are interrupted (as a handler stopped by a shutdown); then it answers.",
    input: Schema.Struct({ label: Schema.String, times: Schema.Number }),
    output: Schema.Struct({ label: Schema.String, calls: Schema.Number }),
    run: ({ label, times }) =>
      Effect.suspend(() => {
        const count = (interrupted.get(label) ?? 0) + 1
        interrupted.set(label, count)
        record({ tool: "probe.interrupt_first", input: { label } })
        return count <= times ? Effect.interrupt : Effect.succeed({ label, calls: count })
      })
  })
  /** Resolves once `tool` has been called (at once if it was already). */
  const called = (tool: string): Promise<void> =>
    calls.some((c) => c.tool === tool)
      ? Promise.resolve()
      : new Promise((resolve) => waiters.push({ tool, resolve }))
  return {
    tools: [barrier, echo, fail, hang, effect, interruptFirst],
    calls,
    called,
    /** `called` as an effect. */
    calledEffect: (tool: string) => Effect.promise(() => called(tool)),
    maxInFlight: () => maxInFlight,
    reset: () => {
      calls.length = 0
      inFlight = 0
      maxInFlight = 0
      bothIn = Deferred.unsafeMake<void>(undefined as any)
    }
  }
}

/**
 * All three services' entities on one in-memory runner, with the probes registered. The integrator's
 * stores are part of the output, so an HTTP edge built on top shares them with the connections.
 */
export const clusterLayer = (
  probes: ReturnType<typeof makeProbes>,
  options: {
    readonly agent?: Partial<AgentConfig.AgentConfig["Type"]>
    readonly llm?: Partial<LlmGateway.LlmGatewayConfig["Type"]>
    /** Operator egress allowlist (`EGRESS_ALLOW_HOSTS`); loopback by default, for the fakes. */
    readonly egressAllow?: ReadonlyArray<string>
    /** Retry and circuit-breaker settings of the connections. */
    readonly resilience?: Partial<Resilience.ResilienceConfig["Type"]>
    /** Keep sessions, events and the tool execution ledger in this Redis, under `prefix`; memory otherwise. */
    readonly redis?: { readonly url: string; readonly prefix: string }
    /** The tool service's execution ledger, when a test sets it up itself. */
    readonly ledger?: Layer.Layer<ExecutionLedger.ExecutionLedger>
  } = {}
) => {
  // one guard for the LLM gateway and the tools, and one Redis connection for the stores, as in production
  const egress = ToolService.egressTest(options.egressAllow)
  const redisStores = options.redis
    ? { layer: Layer.orDie(Redis.layer({ url: options.redis.url })), prefix: options.redis.prefix }
    : undefined
  return Layer.mergeAll(
    AgentService.layerTest({ config: options.agent, redis: redisStores }).pipe(Layer.provide(ToolService.pureTools)),
    IntegratorService.layerTest({ llm: options.llm, resilience: options.resilience }).pipe(Layer.provide(egress)),
    ToolService.layerTest({ egress, extra: probes.tools, redis: redisStores, ledger: options.ledger })
  ).pipe(
    Layer.provideMerge(IntegratorService.storesMemory),
    // a test tool that never answers keeps its entity busy: shutting down need not wait for it as long
    Layer.provideMerge(ShardingMemory({ entityTerminationTimeout: Duration.seconds(1) })),
    // the audit trail in memory, readable by the tests (`AuditMemory`)
    Layer.provideMerge(MemorySink.layer)
  )
}

export const issuer = "https://idp.test"

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A task that has ended: succeeded, failed or cancelled. */
export const ended = (task: { readonly status: string }) => ["succeeded", "failed", "cancelled"].includes(task.status)
export const audience = "altan-test"

/**
 * The public HTTP API on a free loopback port over `clusterLayer`, verifying tokens signed by a key
 * made for the run; `sign` mints tokens with any claims.
 */
export const startEdge = async (
  probes: ReturnType<typeof makeProbes>,
  options: Parameters<typeof clusterLayer>[1] & {
    readonly maxBodyBytes?: number
    /** Edge admission defaults (per tenant requests/s, concurrent tasks). */
    readonly admission?: Partial<Admission.Options>
    /** Receives every span of the runtime (tests that look at what traces would export). */
    readonly tracer?: Tracer.Tracer
    /** Receives every log line of the runtime, beside the default logger (tests that look at what is logged). */
    readonly logger?: Logger.Logger<unknown, void>
  } = {}
) => {
  const pair = await jose.generateKeyPair("ES256", { extractable: true })
  const publicPem = await jose.exportSPKI(pair.publicKey)
  const authConfig = Layer.succeed(AuthConfig.AuthConfig, {
    keys: { _tag: "PublicKey", key: createPublicKey(publicPem) },
    issuer,
    audience
  })
  const layer = HttpEdgeLive.pipe(
    Layer.provide(
      Layer.effect(
        Readiness.Readiness,
        Effect.map(clusterRoundTrip, (check) => ({ checks: [["cluster", check]] as const }))
      )
    ),
    Layer.provide(TokenVerifier.layer),
    Layer.provide(Admission.layer(options.admission)),
    Layer.provide(DevIssuer.layer),
    Layer.provide(authConfig),
    Layer.provide(IntegratorConfig.layer(options.maxBodyBytes ? { maxBodyBytes: options.maxBodyBytes } : {})),
    Layer.provideMerge(NodeHttpServer.layer(EdgeServer.make, { port: 0, host: "127.0.0.1" })),
    Layer.provideMerge(clusterLayer(probes, options)),
    Layer.provide(options.tracer ? Layer.setTracer(options.tracer) : Layer.empty),
    Layer.provide(options.logger ? Logger.add(options.logger) : Layer.empty)
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = Context.get(context, HttpServer.HttpServer).address as HttpServer.TcpAddress
  const sign = (
    claims: Record<string, unknown>,
    opts: { iss?: string; aud?: string; exp?: number | string; key?: jose.CryptoKey } = {}
  ) =>
    new jose.SignJWT({ sub: "user-1", ...claims })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(opts.iss ?? issuer)
      .setAudience(opts.aud ?? audience)
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? "10m")
      .sign(opts.key ?? pair.privateKey)
  const base = `http://127.0.0.1:${address.port}`
  /** One API call with a bearer token; the body parsed when there is one. */
  const call = async (
    method: string,
    path: string,
    token: string,
    body?: unknown,
    headers: Record<string, string> = {}
  ) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    const text = await res.text()
    return {
      status: res.status,
      text,
      body: res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined
    }
  }
  const auditMemory = Context.get(context, MemorySink.AuditMemory)
  return {
    base,
    call,
    publicPem,
    sign,
    /** The audit records written so far, oldest first. */
    audit: () => auditMemory.records(),
    /** The events of a task that has ended (its stream ends after the terminal event), oldest first. */
    events: async (taskId: string, token: string): Promise<Array<any>> => {
      const res = await call("GET", `/v1/tasks/${taskId}/events`, token)
      return res.text.split("\n\n").filter((block) => block.startsWith("id:")).map((block) =>
        JSON.parse(block.slice(block.indexOf("data: ") + 6))
      )
    },
    /** Polls the task until `done` says so (at most ~10 s), and answers it as it then is. */
    until: async (taskId: string, token: string, done: (task: any) => boolean) => {
      for (let i = 0; i < 100; i++) {
        const task = (await call("GET", `/v1/tasks/${taskId}`, token)).body
        if (done(task)) return task
        await sleep(100)
      }
      throw new Error(
        `task ${taskId} did not get there: ${JSON.stringify((await call("GET", `/v1/tasks/${taskId}`, token)).body)}`
      )
    },
    /** Runs an effect with the runtime's services (its stores, the cluster's entity clients). */
    run: <A, E>(effect: Effect.Effect<A, E, Layer.Layer.Success<typeof layer>>) =>
      Effect.runPromise(Effect.provide(effect, context)),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** A span as an exporter would send it: name, attributes, events, and how it ended. */
export interface CapturedSpan {
  readonly name: string
  readonly attributes: ReadonlyMap<string, unknown>
  readonly events: Array<unknown>
  end?: string
}

/** A tracer that records every span of the runtime (`spans`), for tests that look at what traces would export. */
export const capturingTracer = () => {
  const spans: Array<CapturedSpan> = []
  const native = Effect.runSync(Effect.tracer)
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      const record: CapturedSpan = { name: span.name, attributes: span.attributes, events: [] }
      spans.push(record)
      const end = span.end.bind(span)
      span.end = (endTime, exit) => {
        record.end = Exit.isFailure(exit) ? Cause.pretty(exit.cause, { renderErrorCause: true }) : "ok"
        end(endTime, exit)
      }
      const event = span.event.bind(span)
      span.event = (name, startTime, attributes) => {
        record.events.push([name, attributes])
        event(name, startTime, attributes)
      }
      return span
    },
    context: (f) => f()
  })
  /** Every span so far as one string, to look for what must not be there. */
  const text = () => JSON.stringify(spans.map((s) => [s.name, [...s.attributes.entries()], s.events, s.end]))
  return { tracer, spans, text }
}

/** A logger that records every log line of the runtime (`lines`): level, message, annotations, spans and cause. */
export const capturingLogger = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ annotations, cause, logLevel, message, spans }) => {
    lines.push(JSON.stringify([
      logLevel.label,
      message,
      [...annotations],
      [...spans].map((s) => s.label),
      Cause.isEmpty(cause) ? null : Cause.pretty(cause, { renderErrorCause: true })
    ]))
  })
  return { logger, lines, text: () => lines.join("\n") }
}

/**
 * Follows redirects by hand with a cookie jar, as a browser would, until one leads off the authorization servers
 * (`stays` says which URLs are theirs): the URL it leads to (the client's callback).
 */
export const browse = async (start: string, stays: (url: string) => boolean): Promise<string> => {
  const jar = new Map<string, string>()
  let url = start
  for (let i = 0; i < 10; i++) {
    const res = await fetch(url, {
      redirect: "manual",
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") }
    })
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";")
      const eq = pair!.indexOf("=")
      jar.set(pair!.slice(0, eq), pair!.slice(eq + 1))
    }
    const location = res.headers.get("location")
    if (location === null) throw new Error(`no redirect from ${url}: ${res.status} ${await res.text()}`)
    const next = new URL(location, url).href
    if (!stays(next)) return next
    url = next
  }
  throw new Error("too many redirects")
}
