import type { AgentConfig } from "@altan/agent/AgentConfig"
import * as AgentService from "@altan/agent/AgentService"
import * as StdoutSink from "@altan/audit/StdoutSink"
import type { TenantId } from "@altan/domain/Ids"
import * as Readiness from "@altan/domain/Readiness"
import type { ToolDefinition, ToolSpec } from "@altan/domain/ToolDefinition"
import { catalogId, ToolWorker } from "@altan/domain/ToolWorker"
import * as Admission from "@altan/integrator/Admission"
import * as AuthConfig from "@altan/integrator/AuthConfig"
import * as DevIssuer from "@altan/integrator/DevIssuer"
import { HttpEdgeLive } from "@altan/integrator/HttpEdge"
import * as IntegratorConfig from "@altan/integrator/IntegratorConfig"
import * as IntegratorService from "@altan/integrator/IntegratorService"
import * as Resilience from "@altan/integrator/Resilience"
import * as TokenVerifier from "@altan/integrator/TokenVerifier"
import * as Redis from "@altan/redis/Redis"
import { TextTemplate } from "@altan/tool/builtin/Text"
import type { Tool } from "@altan/tool/Tool"
import * as ToolService from "@altan/tool/ToolService"
import type * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRefs from "effect/FiberRefs"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { fork } from "node:child_process"
import { createServer } from "node:http"
import { fileURLToPath } from "node:url"
import { clusterRoundTrip, ShardingMemory } from "../packages/cluster/src/Runtime.js"
import { shardGroups, shardsPerGroup } from "../packages/cluster/src/RuntimeConfig.js"
import { startFakeOpenAi } from "../packages/cluster/test/FakeOpenAi.js"

// one guard (and one set of connection pools) for the LLM gateway and the tools, as in production
const egress = ToolService.egressTest(["127.0.0.1"])

/**
 * `text.template` under another id (`bench.template`): the same work, but not one of the pure built-ins a session runs
 * itself, so its calls go through the tenant's `Connection` to a tool worker, as every other tool's do.
 */
export const benchTemplate: Tool = {
  ...TextTemplate,
  spec: { ...TextTemplate.spec, tool_id: "bench.template" as ToolSpec["tool_id"], name: "Template (through a worker)" }
}

/**
 * One in-process runner holding every shard group over `storage` (shard assignments in memory, no other runner, local
 * messages handed over as they are), as `ShardingMemory` is over ours.
 */
export const oneRunner = <A extends MessageStorage.MessageStorage, E, R>(storage: Layer.Layer<A, E, R>) =>
  Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(storage),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer({
      availableShardGroups: shardGroups,
      assignedShardGroups: shardGroups,
      shardsPerGroup,
      simulateRemoteSerialization: false
    }))
  )

/** One runner whose persisted messages are stored in PostgreSQL at `url`, as a deployment's (`DATABASE_URL`). */
export const sqlSharding = (url: string) =>
  oneRunner(SqlMessageStorage.layer).pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url) })), Layer.orDie)

/**
 * The embedded runtime (all three services, one in-memory runner) with the API on a free loopback port; `sharding`
 * replaces the runner (another message storage, say).
 */
export const startRuntime = async (
  options: {
    readonly extra?: Layer.Layer<never, never, Sharding.Sharding>
    readonly sharding?: Layer.Layer<Sharding.Sharding | Runners.Runners | MessageStorage.MessageStorage>
    /** Keep tasks, conversations and events in this Redis (under `prefix`) instead of process memory. */
    readonly redis?: { readonly url: string; readonly prefix: string }
    /** Traces with this tracer instead of the default (e.g. one that counts spans). */
    readonly tracer?: Tracer.Tracer
    /** The Agent Service's tuning, over its defaults (e.g. sessions held longer than `SESSION_MAX_IDLE_TIME`'s). */
    readonly agent?: Partial<AgentConfig["Type"]>
  } = {}
) => {
  const layer = HttpEdgeLive.pipe(
    Layer.provide(
      Layer.effect(
        Readiness.Readiness,
        Effect.map(clusterRoundTrip, (check) => ({ checks: [["cluster", check]] as const }))
      )
    ),
    Layer.provide(TokenVerifier.layer),
    // the benchmarks drive one tenant hard on purpose
    Layer.provide(Admission.layer({ requestsPerSecond: 1_000_000, maxConcurrentTasks: 100_000 })),
    Layer.provideMerge(DevIssuer.layer),
    Layer.provide(
      Layer.succeed(AuthConfig.AuthConfig, {
        keys: { _tag: "Dev" },
        issuer: AuthConfig.devIssuer,
        audience: AuthConfig.devAudience
      })
    ),
    Layer.provide(IntegratorConfig.layer()),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
    Layer.provideMerge(Layer.mergeAll(
      options.extra ?? Layer.empty,
      AgentService.layerTest({
        config: options.agent,
        redis: options.redis
          ? { layer: Layer.orDie(Redis.layer({ url: options.redis.url })), prefix: options.redis.prefix }
          : undefined
      }).pipe(Layer.provide(ToolService.pureTools)),
      IntegratorService.layerTest({ resilience: Resilience.defaults }).pipe(Layer.provide(egress)),
      ToolService.layerTest({ egress, extra: [benchTemplate] })
    )),
    Layer.provideMerge(IntegratorService.storesMemory),
    // as production writes them (one JSON line per record), to nowhere: the memory sink would grow the heap all run
    Layer.provideMerge(StdoutSink.layer({ write: () => undefined })),
    // as `npm start` runs: one process, no simulated wire
    Layer.provideMerge(options.sharding ?? ShardingMemory({ simulateRemoteSerialization: false })),
    Layer.provideMerge(options.tracer ? Layer.setTracer(options.tracer) : Layer.empty)
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = (context.unsafeMap.get(HttpServer.HttpServer.key) as HttpServer.HttpServer)
    .address as HttpServer.TcpAddress
  const issuer = context.unsafeMap.get(DevIssuer.DevIssuer.key) as Context.Tag.Service<typeof DevIssuer.DevIssuer>
  // one runtime for every call, as a fiber inside the cluster holds its context (no per-call context merge)
  const runtime = Runtime.make({
    context: context as Context.Context<any>,
    fiberRefs: FiberRefs.empty(),
    runtimeFlags: Runtime.defaultRuntime.runtimeFlags
  })
  const token = await Effect.runPromise(issuer.issue({ tenant_id: "bench", sub: "bench", role: "admin" }))
  return {
    base: `http://127.0.0.1:${address.port}`,
    token,
    /** Runs an effect that needs the runtime's services (entity clients). */
    run: <A, E>(effect: Effect.Effect<A, E, any>): Promise<A> => Runtime.runPromise(runtime, effect),
    stop: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

export interface Result {
  readonly name: string
  readonly concurrency: number
  readonly count: number
  readonly perSecond: number
  readonly p50: number
  readonly p99: number
  /** CPU time of this process per operation (ms): the runtime's and the load generator's, when they share it. */
  readonly cpuMs: number
}

/** Calls `op` from `concurrency` loops for `seconds` (after a short warm-up) and reports throughput and latency. */
export const measure = async (
  name: string,
  concurrency: number,
  op: () => Promise<void>,
  options: { seconds?: number; warmup?: number; maxCount?: number } = {}
): Promise<Result> => {
  const { maxCount = 200_000, seconds = 3, warmup = 200 } = options
  for (let i = 0; i < warmup; i++) await op()
  const latencies: Array<number> = []
  const deadline = performance.now() + seconds * 1000
  const cpu = process.cpuUsage()
  const started = performance.now()
  const worker = async () => {
    while (performance.now() < deadline && latencies.length < maxCount) {
      const t = performance.now()
      await op()
      latencies.push(performance.now() - t)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - started) / 1000
  const used = process.cpuUsage(cpu)
  return summary(name, concurrency, latencies, elapsed, (used.user + used.system) / 1000)
}

/** Throughput, latency percentiles and CPU per operation of `latencies` (ms) over `elapsed` (s) and `cpuMs`. */
const summary = (
  name: string,
  concurrency: number,
  latencies: Array<number>,
  elapsed: number,
  cpuMs: number
): Result => {
  latencies.sort((a, b) => a - b)
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!
  return {
    name,
    concurrency,
    count: latencies.length,
    perSecond: latencies.length / elapsed,
    p50: at(0.5),
    p99: at(0.99),
    cpuMs: cpuMs / latencies.length
  }
}

/**
 * Measures `scenarios` at one concurrency in `rounds` turns of `seconds` each, taking turns (after a warm-up of each):
 * this machine's speed drifts within seconds, and turns spread the drift over every scenario alike. A scenario's
 * `meter` (e.g. a server's CPU time so far, ms) is read around each of its turns; its growth per operation is the
 * result's `meteredMs`.
 */
export const measureRounds = async (
  scenarios: ReadonlyArray<{
    readonly name: string
    readonly op: () => Promise<void>
    readonly warmup?: number
    readonly meter?: () => Promise<number>
  }>,
  concurrency: number,
  options: { rounds?: number; seconds?: number } = {}
): Promise<Array<Result & { readonly meteredMs?: number }>> => {
  const { rounds = 5, seconds = 1 } = options
  const state = scenarios.map(() => ({ latencies: [] as Array<number>, elapsed: 0, cpu: 0, metered: 0 }))
  for (const { op, warmup = 200 } of scenarios) for (let i = 0; i < warmup; i++) await op()
  for (let round = 0; round < rounds; round++) {
    for (const [i, { meter, op }] of scenarios.entries()) {
      const into = state[i]!
      const meteredBefore = meter ? await meter() : 0
      const deadline = performance.now() + seconds * 1000
      const cpu = process.cpuUsage()
      const started = performance.now()
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (performance.now() < deadline) {
          const t = performance.now()
          await op()
          into.latencies.push(performance.now() - t)
        }
      }))
      into.elapsed += (performance.now() - started) / 1000
      const used = process.cpuUsage(cpu)
      into.cpu += (used.user + used.system) / 1000
      if (meter) into.metered += (await meter()) - meteredBefore
    }
  }
  return scenarios.map(({ meter, name }, i) => {
    const { cpu, elapsed, latencies, metered } = state[i]!
    return {
      ...summary(name, concurrency, latencies, elapsed, cpu),
      ...(meter ? { meteredMs: metered / latencies.length } : {})
    }
  })
}

export const print = (results: ReadonlyArray<Result>, baseline?: (r: Result) => Result | undefined) => {
  const rows = results.map((r) => {
    const b = baseline?.(r)
    return {
      scenario: r.name,
      "in flight": r.concurrency,
      requests: r.count,
      "per s": Math.round(r.perSecond),
      "p50 ms": r.p50.toFixed(2),
      "p99 ms": r.p99.toFixed(2),
      "CPU ms/op": r.cpuMs.toFixed(3),
      "vs baseline": b && b !== r
        ? `${(r.perSecond / b.perSecond * 100).toFixed(0)}% thr, +${(r.p50 - b.p50).toFixed(2)} ms p50`
        : ""
    }
  })
  console.table(rows)
}

/**
 * A loopback "weather API" answering a small JSON body, after `delayMs` (0: at once); its URL. It runs in a child
 * process, as a vendor's API runs on another machine: its CPU is not charged to the runtime under test, nor to the
 * raw baseline. The child exits with this process.
 */
export const startUpstream = async (delayMs = 0): Promise<string> => {
  const child = fork(upstreamScript, [String(delayMs)], { stdio: ["ignore", "ignore", "inherit", "ipc"] })
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (message) => resolve((message as { port: number }).port))
    child.once("exit", (code) => reject(new Error(`the upstream exited with ${code}`)))
  })
  child.unref()
  child.channel?.unref()
  process.once("exit", () => child.kill())
  return `http://127.0.0.1:${port}/weather`
}

const upstreamScript = fileURLToPath(new URL("./upstream.mjs", import.meta.url))

/** Registers the tenant GET tool `toolId` (one `city` parameter) pointing at `endpoint`. */
export const putWeatherTool = (
  runtime: Awaited<ReturnType<typeof startRuntime>>,
  tenant: TenantId,
  toolId: string,
  endpoint: string,
  provider?: string
) =>
  runtime.run(Effect.flatMap(ToolWorker.client, (workers) =>
    workers(catalogId(tenant)).PutTool({
      definition: {
        tool_id: toolId as ToolDefinition["tool_id"],
        name: toolId,
        description: "bench",
        parameters: [{ name: "city", type: "string", required: true }],
        endpoint,
        method: "GET",
        auth: "none",
        ...(provider ? { provider } : {})
      }
    })))

/**
 * A tracer that counts the spans it starts and the wall time in them, by name, an entity's id left out
 * (`AgentSession(…).Submit`); its spans keep what they are given, as the default's do.
 */
export const countingTracer = () => {
  const counts = new Map<string, number>()
  /** Nanoseconds spent in spans, by name (wall time, nested spans included). */
  const durations = new Map<string, bigint>()
  let ids = 0
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const key = name.replace(/\(.*\)/, "(…)")
      counts.set(key, (counts.get(key) ?? 0) + 1)
      const attributes = new Map<string, unknown>()
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId: String(++ids),
        traceId: parent._tag === "Some" ? parent.value.traceId : String(ids),
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes,
        links: [...links],
        sampled: true,
        kind,
        end: (endTime) => void durations.set(key, (durations.get(key) ?? 0n) + endTime - startTime),
        attribute: (key, value) => void attributes.set(key, value),
        event: () => undefined,
        addLinks: () => undefined
      }
      return span
    },
    context: (f) => f()
  })
  return { tracer, counts, durations }
}

/** A server in a child process: where it listens, and its CPU time so far (ms). */
export interface ServerProcess {
  readonly base: string
  readonly token: string
  readonly cpu: () => Promise<number>
  /** Sends `message` and resolves with the child's next message: one question at a time. */
  readonly ask: (message: unknown) => Promise<unknown>
}

/**
 * Forks `script` (extra `args`, `execArgv`) and waits for its `{base | port, token?}` message; the child answers
 * `"cpu"` with `{cpu}` and exits with this process.
 */
export const forkServer = async (
  script: string,
  args: ReadonlyArray<string>,
  execArgv: ReadonlyArray<string>,
  env?: Record<string, string>
): Promise<ServerProcess> => {
  const child = fork(script, [...args], {
    execArgv: [...execArgv],
    stdio: ["ignore", "ignore", "inherit", "ipc"],
    ...(env ? { env: { ...process.env, ...env } } : {})
  })
  const ready = await new Promise<{ base?: string; port?: number; token?: string }>((resolve, reject) => {
    child.once("message", (message) => resolve(message as { base?: string; port?: number; token?: string }))
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
  })
  child.unref()
  child.channel?.unref()
  process.once("exit", () => child.kill())
  // the channel keeps this process alive only while an answer is awaited
  const ask = (message: unknown) =>
    new Promise<unknown>((resolve) => {
      child.channel?.ref()
      child.once("message", (answer) => {
        child.channel?.unref()
        resolve(answer)
      })
      child.send(message as string)
    })
  return {
    base: ready.base ?? `http://127.0.0.1:${ready.port}`,
    token: ready.token ?? "",
    cpu: () => ask("cpu").then((answer) => (answer as { cpu: number }).cpu),
    ask
  }
}

/**
 * The embedded runtime in a process of its own (`bench/internal/serve.ts`, with this process's loader and conditions
 * and `npm start`'s 32 MB semi-space), with `llm` (an OpenAI-compatible URL) as its tenant's default LLM; with `redis`
 * (a URL) its tasks, conversations and events are kept there (under a prefix of its own, deleted when asked), as a
 * deployment keeps them, instead of in process memory; with `database`, the cluster's messages in PostgreSQL.
 */
export const serveRuntime = (
  options: {
    readonly llm?: string
    readonly redis?: string
    /** Store the cluster's messages in this PostgreSQL database (see `sqlSharding`). */
    readonly database?: string
  } = {}
) =>
  forkServer(
    fileURLToPath(new URL("./internal/serve.ts", import.meta.url)),
    options.llm ? [options.llm] : [],
    [...process.execArgv, "--max-semi-space-size=32"],
    {
      ...(options.redis ? { BENCH_REDIS_URL: options.redis } : {}),
      ...(options.database ? { BENCH_DATABASE_URL: options.database } : {})
    }
  )

/**
 * The engine's floor under a one-step task (`internal/floor.ts`) in a process of its own, run as `serveRuntime`'s;
 * `http`: the endpoint alone, without the persisted message.
 */
export const serveFloor = (mode: "http" | "persisted" = "persisted") =>
  forkServer(
    fileURLToPath(new URL("./internal/floor.ts", import.meta.url)),
    [],
    [...process.execArgv, "--max-semi-space-size=32"],
    { FLOOR_MODE: mode }
  )

/**
 * One task of a profiling scenario over HTTP against `runtime`, which must answer it `succeeded`: `plan`, a sync
 * one-step plan (as `task-http`'s); `nl`, an NL task with one tool turn against a zero-latency fake LLM it configures
 * (as `agent-loop`'s), in a session of its own each.
 */
export const scenarioTask = async (
  runtime: { readonly base: string; readonly token: string },
  kind: "plan" | "nl"
): Promise<() => Promise<void>> => {
  const headers = { authorization: `Bearer ${runtime.token}`, "content-type": "application/json" }
  let body: () => string
  if (kind === "nl") {
    const fake = await startFakeOpenAi()
    fake.script((request) =>
      request.body.messages.at(-1).role === "tool"
        ? { kind: "answer", content: "done" }
        : { kind: "tools", calls: [{ name: "json-extract", arguments: `{"json":{"a":{"b":1}},"path":"a.b"}` }] }
    )
    const put = async (path: string, value: unknown) => {
      const res = await fetch(`${runtime.base}${path}`, { method: "PUT", headers, body: JSON.stringify(value) })
      if (res.status >= 300) throw new Error(`${path}: ${res.status}`)
    }
    await put("/v1/secrets/key", { value: "sk-bench" })
    await put("/v1/llms/fake", { llm_id: "fake", endpoint: fake.url, auth: { type: "api_key", key: "key" } })
    await put("/v1/settings", { default_llm: "fake" })
    let n = 0
    body = () => JSON.stringify({ input: "extract a.b", session_id: `s${n++}`, tools: ["json.extract"] })
  } else {
    const plan = JSON.stringify({
      input: { steps: [{ id: "t", tool: "text.template", input: { template: "hi {{n}}", variables: { n: "x" } } }] }
    })
    body = () => plan
  }
  return async () => {
    const res = await fetch(`${runtime.base}/v1/tasks`, { method: "POST", headers, body: body() })
    const json = await res.json() as { status: string }
    if (json.status !== "succeeded") throw new Error(`task ${json.status}: ${JSON.stringify(json)}`)
  }
}
