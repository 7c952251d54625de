import { describe, expect, it } from "@effect/vitest"
import { createServer, type IncomingHttpHeaders, type Server } from "node:http"
import { afterAll, beforeAll } from "vitest"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { type Cluster, type Runner, startCluster, until } from "./fault/harness.js"
import { type ExportedSpan, startOtlpReceiver } from "./OtlpReceiver.js"

/**
 * OpenTelemetry across real runner processes: an integrator, an agent and a tool runner on a PostgreSQL database of
 * their own, exporting to a loopback OTLP/HTTP receiver (the integrator in JSON, the others in protobuf, both decoded
 * with the official OTLP definitions). One natural-language task (an LLM turn that calls a tenant's tool, then the
 * answer) must be one trace across the three processes, parented as the work flowed, with the tenant, task, tool and
 * provider on its spans, the GenAI attributes on its LLM spans, and no secret anywhere in what was exported.
 */

const tenant = "otel"
const llmKey = "sk-otel-llm-key-5d1e8f"
const toolKey = "weather-key-0c9b7a"
const otlpKey = "otlp-backend-key-77aa"

let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>
let llm: Awaited<ReturnType<typeof startFakeOpenAi>>
let upstream: Server
const upstreamReceived: Array<{ path: string; headers: IncomingHttpHeaders }> = []
let cluster: Cluster
let integrator: Runner
let agent: Runner
let tool: Runner
let token = ""

beforeAll(async () => {
  receiver = await startOtlpReceiver()
  llm = await startFakeOpenAi()
  upstream = createServer((req, res) => {
    upstreamReceived.push({ path: req.url!, headers: req.headers })
    if (req.url!.startsWith("/flaky")) return void res.writeHead(503, { "content-type": "application/json" }).end("{}")
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ city: "Lyon", sky: "clear" }))
  })
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r))
  const upstreamHost = `127.0.0.1:${(upstream.address() as { port: number }).port}`
  cluster = await startCluster({
    name: "telemetry",
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/`,
      OTEL_EXPORTER_OTLP_HEADERS: `x-otlp-key=${otlpKey}`,
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,team=agents%20and%20tools",
      OTEL_TRACES_SAMPLER: "parentbased_always_on",
      OTEL_BSP_SCHEDULE_DELAY: "200",
      OTEL_METRIC_EXPORT_INTERVAL: "1000",
      // the first failed attempt opens a breaker, so its gauge shows within the test
      BREAKER_FAILURE_THRESHOLD: "1",
      EGRESS_ALLOW_HOSTS: `${new URL(llm.url).host},${upstreamHost}`
    }
  })
  ;[integrator, agent, tool] = await cluster.startAll([
    { role: "integrator", env: { OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" } },
    "agent",
    "tool"
  ])
  await cluster.waitReady()
  await cluster.waitRegistered()
  token = await cluster.token({ tenant, role: "admin" })
  const api = cluster.api(token)
  const put = async (path: string, body: unknown) => {
    const res = await api.call("PUT", path, body)
    expect(res.status, `${path}: ${res.text}`).toBeLessThan(300)
  }
  await put("/v1/secrets/llm_key", { value: llmKey })
  await put("/v1/llms/gpt-4", {
    llm_id: "gpt-4",
    endpoint: llm.url,
    model: "gpt-4o-mini",
    auth: { type: "api_key", key: "llm_key" }
  })
  await put("/v1/settings", { default_llm: "gpt-4", egress_allowlist: [upstreamHost] })
  await put("/v1/secrets/weather_key", { value: toolKey })
  await put("/v1/connections/weatherco", { type: "api_key", secret: "weather_key", header: "X-Api-Key" })
  const customTool = (id: string, provider: string, path: string) => ({
    tool_id: id,
    name: id,
    description: `The ${id} of a city`,
    parameters: [{ name: "city", type: "string" }],
    endpoint: `http://${upstreamHost}${path}`,
    method: "GET",
    auth: "api_key",
    provider
  })
  await put("/v1/tools/weather", customTool("weather", "weatherco", "/weather"))
  await put("/v1/tools/flaky", customTool("flaky", "flakyco", "/flaky"))
  await put("/v1/connections/flakyco", { type: "api_key", secret: "weather_key" })
}, 180_000)

afterAll(async () => {
  await cluster?.close()
  await llm?.close()
  await receiver?.close()
  upstream?.closeAllConnections()
  await new Promise((r) => upstream?.close(r))
}, 60_000)

/** `span`'s ancestors in `spans`, nearest first. */
const ancestors = (spans: ReadonlyArray<ExportedSpan>, span: ExportedSpan): Array<ExportedSpan> => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const out: Array<ExportedSpan> = []
  for (let p = span.parentSpanId && byId.get(span.parentSpanId); p; p = p.parentSpanId && byId.get(p.parentSpanId)) {
    out.push(p)
  }
  return out
}

const traceparentOf = (span: ExportedSpan) => `00-${span.traceId}-${span.spanId}-01`

describe("telemetry across the three runners", () => {
  it("exports one trace per task, parented across the processes, with its attributes and no secret", async () => {
    llm.script(
      { kind: "tools", calls: [{ name: "weather", arguments: `{"city":"Lyon"}` }] },
      { kind: "answer", content: "It is clear in Lyon." }
    )
    upstreamReceived.length = 0
    const res = await cluster.api(token).call("POST", "/v1/tasks", { input: "What is the weather in Lyon?" }, {
      timeoutMs: 60_000
    })
    expect(res.status, res.text).toBe(200)
    expect(res.body).toMatchObject({ status: "succeeded", output: "It is clear in Lyon." })
    const taskId: string = res.body.task_id

    // the edge's submit span names the task; its trace is the task's
    const traceId = await until(
      "the task's spans exported",
      30_000,
      async () =>
        receiver.spans().find((s) => s.name === "Tasks.submit" && s.attributes["altan.task_id"] === taskId)?.traceId
    )
    const needed = ["ToolWorker.execute", "Connection.invoke", "AgentSession.execute", "LlmGateway.complete"]
    const trace = await until("the whole trace exported", 30_000, async () => {
      const spans = receiver.spans().filter((s) => s.traceId === traceId)
      const ids = new Set(spans.map((s) => s.spanId))
      const complete = spans.every((s) => s.parentSpanId === undefined || ids.has(s.parentSpanId))
      const llmCalls = spans.filter((s) => s.name === "LlmGateway.complete").length
      return complete && needed.every((n) => spans.some((s) => s.name === n)) && llmCalls === 2 ? spans : undefined
    }, { context: () => JSON.stringify(receiver.spans().filter((s) => s.traceId === traceId).map((s) => s.name)) })
    expect(receiver.failures).toEqual([])

    // the three services, one root: the edge's request span
    expect(new Set(trace.map((s) => s.service))).toEqual(new Set(["altan-integrator", "altan-agent", "altan-tool"]))
    const roots = trace.filter((s) => s.parentSpanId === undefined)
    expect(roots.map((s) => [s.service, s.name, s.kind, s.attributes["http.request.method"]])).toEqual([
      ["altan-integrator", "http.server POST", 2, "POST"]
    ])
    const [root] = roots

    // each span in the process that did the work, under the work that asked for it
    const one = (name: string, service: string, extra: (s: ExportedSpan) => boolean = () => true) => {
      const found = trace.filter((s) => s.name === name && extra(s))
      expect(found.length, name).toBeGreaterThan(0)
      for (const s of found) expect(s.service, name).toBe(service)
      return found[0]!
    }
    const session = one("AgentSession.execute", "altan-agent")
    const invoke = one("Connection.invoke", "altan-integrator")
    const execute = one("ToolWorker.execute", "altan-tool")
    const complete = one("Connection.complete", "altan-integrator")
    const gateway = one("LlmGateway.complete", "altan-integrator")
    const toolRequest = one("Egress.request", "altan-tool", (s) => ancestors(trace, s).includes(execute))
    const llmRequest = one("Egress.request", "altan-integrator", (s) => ancestors(trace, s).includes(gateway))
    expect(ancestors(trace, session)).toContain(root)
    // a sync task runs in its own (persisted) Submit, handled on the agent runner
    expect(ancestors(trace, session).some((s) => s.name.endsWith(".Submit") && s.service === "altan-agent")).toBe(true)
    expect(ancestors(trace, invoke)).toContain(session)
    expect(ancestors(trace, execute)).toContain(invoke)
    expect(ancestors(trace, complete)).toContain(session)
    expect(ancestors(trace, gateway)).toContain(complete)
    // a message's handler span is the child of its client's span, in the sender's process
    const handler = trace.find((s) => s.spanId === execute.parentSpanId)!
    const client = trace.find((s) => s.spanId === handler.parentSpanId)!
    expect([handler.service, handler.name.endsWith(".Execute")]).toEqual(["altan-tool", true])
    expect([client.service, client.name]).toEqual(["altan-integrator", "ToolWorker.client.Execute"])

    // the attributes: tenant, task, tool, provider; GenAI on the LLM spans; HTTP on the upstream requests
    for (const span of [session, invoke, execute, complete]) {
      expect(span.attributes, span.name).toMatchObject({ "altan.tenant_id": tenant, "altan.task_id": taskId })
    }
    for (const span of [invoke, execute]) {
      expect(span.attributes, span.name).toMatchObject({ "altan.tool_id": "weather", "altan.provider": "weatherco" })
    }
    expect(complete.attributes).toMatchObject({ "altan.provider": "llm:gpt-4", "gen_ai.operation.name": "chat" })
    for (const span of trace.filter((s) => s.name === "LlmGateway.complete")) {
      expect(span.kind).toBe(3)
      expect(span.attributes).toMatchObject({
        "altan.tenant_id": tenant,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "fake-model",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7
      })
    }
    const port = (url: string) => Number(new URL(url).port)
    expect(toolRequest).toMatchObject({
      kind: 3,
      attributes: {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port(`http://${upstreamReceived[0]!.headers.host}`),
        "http.response.status_code": 200
      }
    })
    expect(llmRequest.attributes).toMatchObject({
      "http.request.method": "POST",
      "server.address": "127.0.0.1",
      "server.port": port(llm.url),
      "http.response.status_code": 200
    })

    // the upstreams joined the trace: each request carried its Egress.request span as parent
    expect(upstreamReceived.map((r) => r.headers.traceparent)).toEqual([traceparentOf(toolRequest)])
    const llmRequests = trace.filter((s) => s.name === "Egress.request" && s.service === "altan-integrator")
    expect(llm.received.map((r) => r.traceparent).sort()).toEqual(llmRequests.map(traceparentOf).sort())

    // the resource: the role's service name, OTEL_RESOURCE_ATTRIBUTES decoded; the export headers were sent
    const resource = receiver.exports.find((e) => e.signal === "traces")!.decoded.resourceSpans[0].resource
    expect(resource.attributes).toEqual(expect.arrayContaining([
      { key: "deployment.environment", value: { stringValue: "test" } },
      { key: "team", value: { stringValue: "agents and tools" } }
    ]))
    expect(receiver.exports.every((e) => e.headers["x-otlp-key"] === otlpKey)).toBe(true)
    const types = new Set(receiver.exports.map((e) => e.contentType.split(";")[0]))
    expect(types).toEqual(new Set(["application/json", "application/x-protobuf"]))

    // no secret in anything exported, as bytes or as decoded
    const secrets = [llmKey, toolKey, otlpKey, token, token.split(".")[2]!]
    for (const e of receiver.exports) {
      const text = [e.body.toString("latin1"), e.body.toString("utf8"), JSON.stringify(e.decoded)].join("\n")
      for (const secret of secrets) expect(text.includes(secret), `${e.signal} holds a secret`).toBe(false)
    }
  }, 120_000)

  it("exports the metrics over OTLP and serves them as Prometheus text on every runner's operator port", async () => {
    // a failing upstream opens its breaker (threshold 1 here)
    const failed = await cluster.api(token).call("POST", "/v1/tasks", {
      input: { steps: [{ id: "f", tool: "flaky", input: { city: "Lyon" } }] }
    }, { timeoutMs: 60_000 })
    expect(failed.body.status, failed.text).toBe("failed")

    const byService = {
      "altan-agent": [
        "altan_tasks_accepted_total",
        "altan_tasks_finished_total",
        "altan_task_duration_seconds",
        "altan_tasks_in_flight",
        "altan_audit_records_total",
        "altan_audit_sink_failures_total"
      ],
      "altan-integrator": [
        "altan_calls_total",
        "altan_rate_limit_wait_seconds",
        "altan_breaker_open",
        "altan_llm_tokens_total",
        "altan_audit_records_total",
        "altan_audit_sink_failures_total"
      ],
      "altan-tool": ["altan_audit_records_total", "altan_audit_sink_failures_total"]
    }
    await until(
      "the metrics exported",
      30_000,
      async () =>
        Object.entries(byService).every(([service, names]) =>
            names.every((name) => receiver.metrics().some((m) => m.service === service && m.name === name))
          )
          ? true
          : undefined,
      {
        context: () => JSON.stringify([...new Set(receiver.metrics().map((m) => `${m.service} ${m.name}`))])
      }
    )
    const last = (service: string, name: string) =>
      receiver.metrics().filter((m) => m.service === service && m.name === name).at(-1)!
    expect(last("altan-agent", "altan_tasks_finished_total").points).toEqual(
      expect.arrayContaining([{ status: "succeeded" }, { status: "failed" }])
    )
    expect(last("altan-integrator", "altan_llm_tokens_total").points).toEqual(
      expect.arrayContaining([
        { tenant, model: "gpt-4o-mini", type: "input" },
        { tenant, model: "gpt-4o-mini", type: "output" }
      ])
    )
    expect(last("altan-integrator", "altan_breaker_open").points).toContainEqual({ tenant, provider: "flakyco" })

    // Prometheus text on the operator port of each runner, never on the API's port
    const scrape = async (runner: Runner) => {
      const res = await fetch(`${runner.metricsBase}/metrics`)
      expect(res.headers.get("content-type")).toContain("text/plain")
      return res.text()
    }
    const agentText = await scrape(agent)
    expect(agentText).toMatch(/^altan_tasks_accepted_total 2$/m)
    expect(agentText).toMatch(/^altan_tasks_finished_total\{status="succeeded"\} 1$/m)
    expect(agentText).toMatch(/^altan_tasks_finished_total\{status="failed"\} 1$/m)
    expect(agentText).toMatch(/^altan_tasks_in_flight 0$/m)
    expect(agentText).toMatch(/^altan_task_duration_seconds_bucket\{status="succeeded",le="\+Inf"\} 1$/m)
    const integratorText = await scrape(integrator)
    expect(integratorText).toMatch(new RegExp(`^altan_breaker_open\\{tenant="${tenant}",provider="flakyco"\\} 1$`, "m"))
    expect(integratorText).toMatch(
      new RegExp(`^altan_calls_total\\{tenant="${tenant}",provider="weatherco",outcome="ok"\\} 1$`, "m")
    )
    expect(integratorText).toMatch(
      new RegExp(`^altan_calls_total\\{tenant="${tenant}",provider="flakyco",outcome="failed"\\} \\d+$`, "m")
    )
    expect(integratorText).toMatch(
      new RegExp(`^altan_llm_tokens_total\\{tenant="${tenant}",model="gpt-4o-mini",type="input"\\} 22$`, "m")
    )
    expect(integratorText).toMatch(/^altan_rate_limit_wait_seconds_count\{/m)
    expect(integratorText).toMatch(/^altan_audit_sink_failures_total\{sink="none"\} 0$/m)
    expect(await scrape(tool)).toMatch(/^altan_audit_records_total\{action="http.request",outcome="ok"\} 1$/m)
    expect((await fetch(`${integrator.base}/metrics`)).status).toBe(404)

    // the probes of every role on the operator port
    for (const runner of [integrator, agent, tool]) {
      expect((await fetch(`${runner.metricsBase}/healthz`)).status, runner.name).toBe(200)
      const ready = await fetch(`${runner.metricsBase}/readyz`)
      expect([ready.status, await ready.json()], runner.name).toEqual([
        200,
        { status: "ok", checks: { cluster_storage: "ok" } }
      ])
    }
  }, 90_000)
})
