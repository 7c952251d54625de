import * as AuditLog from "@altan/audit/AuditLog"
import * as MemorySink from "@altan/audit/MemorySink"
import type { TenantId } from "@altan/domain/Ids"
import type { ChatMessage, Completion } from "@altan/domain/Llm"
import { ToolDefinition } from "@altan/domain/ToolDefinition"
import { catalogId, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as Egress from "../src/Egress.js"
import { EgressConfig } from "../src/EgressConfig.js"
import * as ExecutionLedger from "../src/ExecutionLedger.js"
import * as ToolCache from "../src/ToolCache.js"
import * as ToolRegistry from "../src/ToolRegistry.js"
import { ToolWorkerLive } from "../src/ToolWorker.js"
import { installConnectTripwire } from "./connectTripwire.js"

// `ToolWorkerLive`'s handlers through `Entity.makeTestClient` (no sharding, no runner): memory stores, the real
// egress guard against a loopback server, and an audit log that keeps what it is given.

const tenant = "t1" as TenantId
/** The runner address `Entity.makeTestClient` gives its entities. */
const testRunner = "localhost:3000"

// ---------------------------------------------------------------------------------------------------------------
// A loopback upstream: counts requests per path, answers `?status=`, `?delay=` ms late, or never (`?hang`).

const hits = new Map<string, number>()
const arrivalWaiters = new Map<string, () => void>()
const hanging: Array<http.ServerResponse> = []
let server: http.Server
let base = ""
let tripwire: ReturnType<typeof installConnectTripwire>

beforeAll(async () => {
  tripwire = installConnectTripwire()
  server = http.createServer((req, res) => {
    let body = ""
    req.on("data", (chunk) => (body += chunk)).on("end", () => {
      const url = new URL(req.url!, "http://upstream")
      const n = (hits.get(url.pathname) ?? 0) + 1
      hits.set(url.pathname, n)
      arrivalWaiters.get(url.pathname)?.()
      if (url.searchParams.has("hang")) {
        hanging.push(res)
        return
      }
      const answer = () =>
        res.writeHead(Number(url.searchParams.get("status") ?? 200), { "content-type": "application/json" })
          .end(JSON.stringify({ n, method: req.method, body }))
      const delay = Number(url.searchParams.get("delay") ?? 0)
      if (delay > 0) setTimeout(answer, delay)
      else answer()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  for (const res of hanging) res.destroy()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  tripwire.restore()
  // the tripwire saw the calls to the loopback upstream, and nothing else
  expect(tripwire.attempts.length).toBeGreaterThan(0)
  expect(tripwire.refused).toEqual([])
})

const hitsOf = (path: string) => hits.get(path) ?? 0

/** Resolves when the upstream receives a request for `path`; call it before sending. */
const arrival = (path: string) =>
  Effect.async<void>((resume) => {
    arrivalWaiters.set(path, () => resume(Effect.void))
    return Effect.sync(() => arrivalWaiters.delete(path))
  })

// ---------------------------------------------------------------------------------------------------------------
// The worker under test

/** What the worker's services saw: audit records, completions asked of the integrator's LLM connection. */
interface World {
  readonly ledger: ExecutionLedger.ExecutionLedger["Type"]
  /** The audit log the worker writes to: the library's own, in memory. */
  readonly sink: ReturnType<typeof MemorySink.make>
  /** What was recorded, as entries (without the chain's time and hashes). */
  readonly audit: ReadonlyArray<AuditLog.AuditEntry>
  readonly completions: Array<{ readonly entityId: string; readonly payload: CompleteRequest }>
}

interface CompleteRequest {
  readonly messages: ReadonlyArray<ChatMessage>
  readonly fallbacks: ReadonlyArray<string>
  readonly task_id?: string
}

const makeWorld = (ledger = ExecutionLedger.makeMemory()): World => {
  const sink = MemorySink.make()
  return {
    ledger,
    sink,
    get audit() {
      return sink.records().map(({ action, details, latency_ms, outcome, target, tenant_id }) => ({
        tenant_id,
        action,
        target,
        outcome,
        ...(latency_ms !== undefined ? { latency_ms } : {}),
        ...(details !== undefined ? { details } : {})
      }))
    },
    completions: []
  }
}

const completion = (llmId: string, content: string): Completion => ({
  llm_id: llmId,
  content,
  tool_calls: [],
  usage: { prompt_tokens: 7, completion_tokens: 3 },
  attempts: []
})

/**
 * `ToolWorkerLive` as the test client registers it. Its build asks Sharding for the integrator's `Connection`
 * client (only `text.generate` uses it), which the test client's stand-in Sharding cannot make: this one answers
 * `Complete` from the world instead, and the test client still receives the registration.
 */
const workerLayer = (world: World) =>
  Layer.unwrapEffect(Effect.map(Sharding.Sharding, (sharding) => {
    const connectionClient = (entityId: string) => ({
      Complete: (payload: CompleteRequest) =>
        Effect.sync(() => {
          world.completions.push({ entityId, payload })
          return completion(entityId.slice(entityId.indexOf(":") + 1), "drafted")
        })
    })
    const makeClient = () => Effect.succeed(connectionClient)
    return ToolWorkerLive.pipe(
      Layer.provide(Layer.succeed(Sharding.Sharding, {
        ...sharding,
        makeClient: makeClient as unknown as Sharding.Sharding["Type"]["makeClient"]
      }))
    )
  }))

const servicesLayer = (world: World) =>
  Layer.mergeAll(
    ToolRegistry.layerMemory(),
    ToolCache.layerMemory(),
    Layer.succeed(ExecutionLedger.ExecutionLedger, world.ledger),
    Layer.effect(AuditLog.AuditLog, AuditLog.make(world.sink)),
    Egress.layer.pipe(Layer.provide(EgressConfig.layer({
      operatorAllowHosts: [base.slice("http://".length)],
      // a call to the hanging endpoint that should never have been sent fails its test in seconds, not 30
      totalTimeout: Duration.seconds(5)
    }))),
    ShardingConfig.layerDefaults
  )

/** A world, its services and a test client of `ToolWorker` over them; its entities live as long as the scope. */
const setup = (ledger?: ExecutionLedger.ExecutionLedger["Type"]) =>
  Effect.gen(function*() {
    const world = makeWorld(ledger)
    const services = yield* Layer.build(servicesLayer(world))
    const client = yield* Entity.makeTestClient(ToolWorker, workerLayer(world)).pipe(Effect.provide(services))
    return { world, client }
  })

const builtinIds = ToolRegistry.builtins.map((tool) => tool.spec.tool_id)

const crmLookup = Schema.decodeUnknownSync(ToolDefinition)({
  tool_id: "crm_lookup",
  name: "CRM lookup",
  description: "Reads a contact.",
  parameters: [{ name: "id", type: "string" }],
  endpoint: "http://127.0.0.1:1/crm/{id}",
  method: "GET",
  auth: "none"
})

describe("ToolWorker", () => {
  it.scopedLive("lists and describes the built-ins and a tenant's own tool, and keeps tenants apart", () =>
    Effect.gen(function*() {
      const { client } = yield* setup()
      const catalog = yield* client(catalogId(tenant))
      expect((yield* catalog.List()).map((spec) => spec.tool_id)).toEqual(builtinIds)

      const definition = { ...crmLookup, endpoint: `${base}/crm/{id}` }
      const put = yield* catalog.PutTool({ definition })
      expect(put).toMatchObject({ tool_id: "crm_lookup", builtin: false, provider: "custom", side_effect: false })
      expect((yield* catalog.List()).map((spec) => spec.tool_id)).toEqual([...builtinIds, "crm_lookup"])
      const other = yield* client(catalogId("t2"))
      expect((yield* other.List()).map((spec) => spec.tool_id)).toEqual(builtinIds)

      const custom = yield* (yield* client(`${tenant}/crm_lookup`)).Describe()
      expect(custom).toEqual(put)
      expect(custom.input_schema).toEqual({
        type: "object",
        properties: { id: { type: "string" } },
        required: ["id"],
        additionalProperties: false
      })
      const json = yield* (yield* client(`${tenant}/json.extract`)).Describe()
      expect(json).toEqual(ToolRegistry.builtins.find((tool) => tool.spec.tool_id === "json.extract")!.spec)
      expect(json).toMatchObject({ builtin: true, provider: "utility", side_effect: false })

      expect(yield* catalog.GetTool({ tool_id: "crm_lookup" })).toEqual({ spec: put, definition })
      expect(yield* catalog.GetTool({ tool_id: "json.extract" })).toEqual({ spec: json })
      const fromOther = yield* Effect.flip((yield* client("t2/crm_lookup")).Describe())
      expect(fromOther).toMatchObject({ _tag: "ToolNotFound", tool_id: "crm_lookup" })

      yield* catalog.DeleteTool({ tool_id: "crm_lookup" })
      const deleted = yield* Effect.flip((yield* client(`${tenant}/crm_lookup`)).Describe())
      expect(deleted).toMatchObject({ _tag: "ToolNotFound", tool_id: "crm_lookup" })
      const again = yield* Effect.flip(catalog.DeleteTool({ tool_id: "crm_lookup" }))
      expect(again._tag).toBe("ToolNotFound")
    }))

  it.scopedLive("executes built-in utility tools with their result, and refuses input that does not fit", () =>
    Effect.gen(function*() {
      const { client, world } = yield* setup()
      const json = yield* client(`${tenant}/json.extract`)
      const extracted = yield* json.Execute({
        input: { json: "{\"items\":[{\"id\":7},{\"id\":9}]}", path: "items[-1].id" }
      })
      expect(extracted).toEqual({ output: { value: 9, found: true }, cached: false })

      const datetime = yield* client(`${tenant}/datetime.parse`)
      const parsed = yield* datetime.Execute({
        input: { text: "tomorrow at 3pm", timezone: "Europe/Paris", reference: "2024-03-05T10:00:00Z" }
      })
      expect(parsed).toMatchObject({ output: { iso: "2024-03-06T14:00:00.000Z", date: "2024-03-06" }, cached: false })

      const invalid = yield* Effect.flip(json.Execute({ input: { path: "a" } }))
      expect(invalid).toMatchObject({ _tag: "ToolInputInvalid", tool_id: "json.extract" })
      const failed = yield* Effect.flip(json.Execute({ input: { json: { a: 1 }, path: "b" } }))
      expect(failed).toMatchObject({ _tag: "ToolFailed", tool_id: "json.extract", retryable: false })
      // nothing went out, so nothing was audited as a request
      expect(world.audit).toEqual([])
    }))

  it.scopedLive("fails a call to an unknown tool with ToolNotFound", () =>
    Effect.gen(function*() {
      const { client } = yield* setup()
      const unknown = yield* client(`${tenant}/no.such_tool`)
      const error = yield* Effect.flip(unknown.Execute({ input: {} }))
      expect(error).toMatchObject({ _tag: "ToolNotFound", tool_id: "no.such_tool" })
      expect(error.message).toBe("unknown tool: no.such_tool")
      expect((yield* Effect.flip(unknown.Describe()))._tag).toBe("ToolNotFound")
    }))

  it.scopedLive("runs a tenant's tool through the egress guard and audits the request", () =>
    Effect.gen(function*() {
      const { client, world } = yield* setup()
      const catalog = yield* client(catalogId(tenant))
      yield* catalog.PutTool({ definition: { ...crmLookup, endpoint: `${base}/crm/{id}` } })
      const result = yield* (yield* client(`${tenant}/crm_lookup`)).Execute({ input: { id: "42" } })
      expect(result).toEqual({ output: { n: 1, method: "GET", body: "" }, cached: false })
      expect(hitsOf("/crm/42")).toBe(1)
      expect(world.audit).toEqual([{
        tenant_id: tenant,
        action: "http.request",
        target: `${base}/crm/42`,
        outcome: "ok",
        latency_ms: expect.any(Number),
        details: { tool: "crm_lookup", method: "GET", status: 200 }
      }])
    }))

  it.scopedLive("runs a side effect once per execution key: a repeat gets the recorded outcome", () =>
    Effect.gen(function*() {
      const { client, world } = yield* setup()
      const worker = yield* client(`${tenant}/http.request`)
      const post = (path: string, execution_key?: string) =>
        worker.Execute({
          input: { url: `${base}${path}`, method: "POST", json: { order: 1 } },
          ...(execution_key !== undefined ? { execution_key } : {})
        })

      const first = yield* post("/orders", "task-1/s1/1/1")
      expect(first.output).toMatchObject({ status: 200, body: { n: 1, method: "POST", body: "{\"order\":1}" } })
      const repeat = yield* post("/orders", "task-1/s1/1/1")
      expect(repeat).toEqual({ output: first.output, cached: false })
      expect(hitsOf("/orders")).toBe(1)
      expect(yield* world.ledger.read(tenant, "http.request", "task-1/s1/1/1")).toEqual({
        _tag: "Done",
        outcome: { ok: { output: first.output } }
      })
      // another key is another execution; no key, no ledger
      yield* post("/orders", "task-1/s1/1/2")
      yield* post("/orders")
      yield* post("/orders")
      expect(hitsOf("/orders")).toBe(4)

      // a repeat arriving while the first is in flight joins it
      const [a, b] = yield* Effect.all([
        post("/slow-orders?delay=200", "task-2/s1/1/1"),
        post("/slow-orders?delay=200", "task-2/s1/1/1")
      ], { concurrency: "unbounded" })
      expect(hitsOf("/slow-orders")).toBe(1)
      expect(b).toEqual(a)

      // a failure is recorded and given back the same way
      const hook = yield* client(`${tenant}/webhook.notify`)
      const notify = () =>
        hook.Execute({
          input: { url: `${base}/hook?status=500`, event: "order.created", payload: { id: 1 } },
          execution_key: "task-3/s1/1/1"
        })
      const failed = yield* Effect.flip(notify())
      expect(failed).toMatchObject({ _tag: "ToolFailed", status: 500, retryable: true })
      const failedAgain = yield* Effect.flip(notify())
      expect(failedAgain).toMatchObject({ _tag: "ToolFailed", status: 500, message: failed.message })
      expect(hitsOf("/hook")).toBe(1)
    }))

  it.scopedLive("an execution cut off mid-call is not sent again: its repeat fails with unknown_outcome", () =>
    Effect.gen(function*() {
      const ledger = ExecutionLedger.makeMemory()
      const key = "task-4/s1/1/1"
      const input = { url: `${base}/charge?hang`, method: "POST", json: { amount: 5 } }

      // the first worker takes the call and is shut down while the upstream has not answered
      const firstScope = yield* Scope.make()
      const first = yield* setup(ledger).pipe(Scope.extend(firstScope))
      const worker = yield* first.client(`${tenant}/http.request`)
      const arrived = yield* Effect.fork(arrival("/charge"))
      const call = yield* Effect.fork(worker.Execute({ input, execution_key: key }))
      yield* Fiber.join(arrived)
      yield* Scope.close(firstScope, Exit.void)
      yield* Fiber.interrupt(call)
      expect(yield* ledger.read(tenant, "http.request", key)).toMatchObject({ _tag: "Started", runner: testRunner })

      // the worker that resumes the task asks again with the same key
      const second = yield* setup(ledger)
      const resumed = yield* second.client(`${tenant}/http.request`)
      const error = yield* Effect.flip(resumed.Execute({ input, execution_key: key }))
      expect(error).toMatchObject({ _tag: "ToolFailed", unknown_outcome: true, retryable: false })
      expect(error.message).toContain("its outcome is unknown")
      expect(hitsOf("/charge")).toBe(1)

      // a tool without side effects has nothing to lose: it runs whatever the ledger says
      yield* ledger.claim(tenant, "json.extract", key, { runner: testRunner, deadline: Date.now() + 60_000 })
      const json = yield* second.client(`${tenant}/json.extract`)
      expect((yield* json.Execute({ input: { json: [1], path: "[0]" }, execution_key: key })).output).toEqual({
        value: 1,
        found: true
      })
    }))

  it.scopedLive("waits for an execution another runner holds, then gives its outcome; past its deadline, unknown", () =>
    Effect.gen(function*() {
      const { client, world } = yield* setup()
      const worker = yield* client(`${tenant}/http.request`)
      const input = { url: `${base}/elsewhere`, method: "POST", json: {} }
      const other = "10.0.0.9:34431"

      yield* world.ledger.claim(tenant, "http.request", "k-alive", { runner: other, deadline: Date.now() + 10_000 })
      const waiting = yield* Effect.fork(worker.Execute({ input, execution_key: "k-alive" }))
      // the ledger is read every 250 ms while the other runner's lease holds
      yield* Effect.sleep("600 millis")
      expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
      const output = { status: 201, headers: {}, body: "applied by the other runner" }
      yield* world.ledger.finish(tenant, "http.request", "k-alive", { ok: { output } })
      expect(yield* Fiber.join(waiting)).toEqual({ output, cached: false })

      yield* world.ledger.claim(tenant, "http.request", "k-late", { runner: other, deadline: Date.now() - 1 })
      const late = yield* Effect.flip(worker.Execute({ input, execution_key: "k-late" }))
      expect(late).toMatchObject({ _tag: "ToolFailed", unknown_outcome: true })
      expect(hitsOf("/elsewhere")).toBe(0)
    }))

  it.scopedLive("text.generate asks the first LLM's connection, with the rest as fallbacks", () =>
    Effect.gen(function*() {
      const { client, world } = yield* setup()
      const generate = yield* client(`${tenant}/text.generate`)
      const result = yield* generate.Execute({
        input: { prompt: "Draft a greeting", instructions: "Be brief" },
        llms: ["primary", "backup"],
        task_id: "task-5"
      })
      expect(result.output).toEqual({ text: "drafted", llm_id: "primary", prompt_tokens: 7, completion_tokens: 3 })
      expect(world.completions).toEqual([{
        entityId: `${tenant}/llm:primary`,
        payload: {
          messages: [{ role: "system", content: "Be brief" }, { role: "user", content: "Draft a greeting" }],
          tools: [],
          fallbacks: ["backup"],
          task_id: "task-5"
        }
      }])

      const unconfigured = yield* Effect.flip(generate.Execute({ input: { prompt: "Draft a greeting" } }))
      expect(unconfigured).toMatchObject({ _tag: "ToolFailed", tool_id: "text.generate", retryable: false })
      expect(unconfigured.message).toContain("the tenant has no LLM")
      expect(world.completions).toHaveLength(1)
    }))
})
