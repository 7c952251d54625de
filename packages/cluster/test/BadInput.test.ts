import * as MemorySink from "@altan/audit/MemorySink"
import * as Readiness from "@altan/domain/Readiness"
import * as Admission from "@altan/integrator/Admission"
import * as AuthConfig from "@altan/integrator/AuthConfig"
import * as ConnectionStore from "@altan/integrator/ConnectionStore"
import * as DevIssuer from "@altan/integrator/DevIssuer"
import * as EdgeServer from "@altan/integrator/EdgeServer"
import { HttpEdgeLive } from "@altan/integrator/HttpEdge"
import * as IntegratorConfig from "@altan/integrator/IntegratorConfig"
import * as OAuth from "@altan/integrator/OAuth"
import * as SecretStore from "@altan/integrator/SecretStore"
import * as TenantConfig from "@altan/integrator/TenantConfig"
import * as TokenVerifier from "@altan/integrator/TokenVerifier"
import * as UsageMeter from "@altan/integrator/UsageMeter"
import * as Redis from "@altan/redis/Redis"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { ShardingMemory } from "../src/Runtime.js"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { type RedisServer, startRedis } from "./fault/harness.js"
import { makeProbes, startEdge } from "./fixtures.js"

/**
 * Bad input at the public edge: JSON nested too deep for anything recursive, defects and storage outages
 * while answering, and an LLM that repeats the API key it was called with.
 */

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly body: any
}

const send = async (
  base: string,
  method: string,
  path: string,
  token: string,
  body?: RequestInit["body"],
  type?: string
) => {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": type ?? "application/json" },
    ...(body !== undefined ? { body, duplex: "half" } : {})
  } as RequestInit)
  const text = await res.text()
  return {
    status: res.status,
    headers: res.headers,
    text,
    body: res.headers.get("content-type")?.includes("json") && text !== "" ? JSON.parse(text) : undefined
  } satisfies Answer
}

/** `depth` levels of arrays and objects, alternating, around a number. */
const nested = (depth: number) => {
  let open = ""
  let close = ""
  for (let i = 0; i < depth; i++) {
    open += i % 2 === 0 ? "[" : `{"a":`
    close = (i % 2 === 0 ? "]" : "}") + close
  }
  return `${open}1${close}`
}

/** Every route of the public API that takes a body. */
const bodyRoutes: ReadonlyArray<readonly [method: string, path: string]> = [
  ["POST", "/v1/tasks"],
  ["PUT", "/v1/llms/gpt-4"],
  ["PUT", "/v1/settings"],
  ["PUT", "/v1/tools/slack_notify"],
  ["PUT", "/v1/secrets/api_key"],
  ["PUT", "/v1/connections/slack"],
  ["POST", "/v1/connections/slack/authorize"],
  ["POST", "/v1/tasks/ses_x.y/cancel"]
]

const expectTooDeep = (answer: Answer, what: string) => {
  expect(answer.status, `${what}: ${answer.text.slice(0, 300)}`).toBe(400)
  expect(answer.body, what).toEqual({
    error: {
      code: "invalid_json",
      message: "the request body is JSON nesting deeper than 64 levels",
      details: { field: "body", max_depth: 64 }
    }
  })
}

describe("deeply nested JSON", () => {
  const probes = makeProbes()
  let edge: Awaited<ReturnType<typeof startEdge>>
  let admin = ""
  const call = (method: string, path: string, body?: RequestInit["body"], type?: string) =>
    send(edge.base, method, path, admin, body, type)

  beforeAll(async () => {
    edge = await startEdge(probes)
    admin = await edge.sign({ tenant_id: "acme", role: "admin" })
  })
  afterAll(() => edge.close())

  it("400 invalid_json on every route with a body, from just over the limit to 10,000 levels", async () => {
    for (const [method, path] of bodyRoutes) {
      for (const depth of [64, 5_000, 10_000]) {
        // the body's own object is one more level
        const answer = await call(method, path, `{"input": "x", "value": ${nested(depth)}}`)
        expectTooDeep(answer, `${method} ${path} at ${depth + 1} levels`)
      }
    }
  })

  it("400 for a deep chunked body, and on the task RPC route (ndjson)", async () => {
    const body = new TextEncoder().encode(`{"value": ${nested(10_000)}}`)
    const chunked = new ReadableStream({
      start(controller) {
        for (let i = 0; i < body.length; i += 4096) controller.enqueue(body.slice(i, i + 4096))
        controller.close()
      }
    })
    expectTooDeep(await call("PUT", "/v1/settings", chunked), "chunked PUT /v1/settings")
    const rpc = `${JSON.stringify({ _tag: "Request", id: "1", tag: "GetTask", payload: { task_id: "ses_x.y" } })}\n` +
      `{"_tag":"Request","id":"2","tag":"GetTask","payload":${nested(10_000)},"headers":[]}\n`
    expectTooDeep(await call("POST", "/rpc", rpc, "application/ndjson"), "POST /rpc")
  })

  it("counts only structure: brackets inside strings, escaped quotes included, are text", async () => {
    const value = `\\"${"[{".repeat(5_000)}\\`
    const answer = await call("PUT", "/v1/secrets/bracketed", JSON.stringify({ value }))
    expect(answer.status, answer.text).toBe(204)
  })

  it("accepts a body exactly at the limit, and the nesting arrives intact", async () => {
    const plan = (depth: number) =>
      // 5 levels around the value: body, input, steps, the step, its input
      `{"input": {"steps": [{"id": "deep", "tool": "probe.echo", "input": {"value": ${nested(depth - 5)}}}]}}`
    const answer = await call("POST", "/v1/tasks", plan(64))
    expect(answer.status, answer.text).toBe(200)
    expect(answer.body.status).toBe("succeeded")
    expect(JSON.stringify(answer.body.steps[0].output.value)).toBe(nested(59))
    expectTooDeep(await call("POST", "/v1/tasks", plan(65)), "POST /v1/tasks at 65 levels")
  })
})

/**
 * The public API over the integrator's Redis-backed stores (tenant configuration, connections, OAuth state;
 * reads uncached) and a cluster with no entities: enough for the configuration routes, and task routes
 * reach the stores (settings for admission) before any entity. The depth limit is raised out of the way.
 */
const startRedisEdge = async (url: string, prefix: string) => {
  const stores = Layer.mergeAll(
    TenantConfig.layerRedis({ prefix, cacheTtl: 0 }),
    ConnectionStore.layerRedis({ prefix, cacheTtl: 0 }),
    OAuth.layerRedis({ prefix }),
    UsageMeter.layerRedis({ prefix }),
    SecretStore.layerMemory
  ).pipe(Layer.provide(Redis.layer({ url })))
  const layer = HttpEdgeLive.pipe(
    Layer.provide(Readiness.layer([])),
    Layer.provide(TokenVerifier.layer),
    Layer.provide(Admission.layer()),
    Layer.provideMerge(DevIssuer.layer),
    Layer.provide(
      Layer.succeed(AuthConfig.AuthConfig, { keys: { _tag: "Dev" }, issuer: "altan-dev", audience: "altan" })
    ),
    Layer.provide(IntegratorConfig.layer({ maxJsonDepth: 1_000_000 })),
    Layer.provideMerge(NodeHttpServer.layer(EdgeServer.make, { port: 0, host: "127.0.0.1" })),
    Layer.provide(Layer.orDie(stores)),
    Layer.provide(ShardingMemory()),
    Layer.provide(MemorySink.layer)
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = Context.get(context, HttpServer.HttpServer).address as HttpServer.TcpAddress
  const admin = await Effect.runPromise(
    Context.get(context, DevIssuer.DevIssuer).issue({ tenant_id: "acme", sub: "ada", role: "admin" })
  )
  const base = `http://127.0.0.1:${address.port}`
  return {
    call: (method: string, path: string, body?: unknown) =>
      send(base, method, path, admin, body === undefined ? undefined : JSON.stringify(body)),
    raw: (method: string, path: string, body: string) => send(base, method, path, admin, body),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** A configuration route's answer while storage is away: 503 with the envelope and when to come back. */
const expectUnavailable = (answer: Answer, what: string) => {
  expect(answer.status, `${what}: ${answer.text}`).toBe(503)
  expect(answer.body.error, what).toMatchObject({ code: "unavailable", message: "storage is unavailable; retry later" })
  expect(Number(answer.headers.get("retry-after")), what).toBeGreaterThanOrEqual(1)
}

describe("defects and storage outages at the edge", () => {
  // a Redis of the test's own, so it can go away
  let redis: RedisServer
  let edge: Awaited<ReturnType<typeof startRedisEdge>>
  const prefix = `badinput-${randomBytes(4).toString("hex")}`
  const cli = (...args: Array<string>) => execFileSync("redis-cli", ["-p", String(redis.port), ...args])

  beforeAll(async () => {
    redis = await startRedis()
    edge = await startRedisEdge(redis.url, prefix)
  })
  afterAll(async () => {
    await edge?.close()
    await redis?.close()
  })

  it("a defect in a handler is a 500 with the envelope and a generic message, not an empty body", async () => {
    // a stored value that does not decode is a defect of the store (it names the key; the answer must not)
    cli("SET", `${prefix}:t:acme:settings`, "{not json")
    try {
      const answer = await edge.call("GET", "/v1/settings")
      expect(answer.status, answer.text).toBe(500)
      expect(answer.body.error).toEqual({
        code: "internal_error",
        message: "the request failed unexpectedly",
        details: { trace_id: expect.stringMatching(/^[0-9a-f]{32}$/) }
      })
      expect(answer.text).not.toContain(prefix)
      expect(answer.text).not.toMatch(/does not decode|\.ts:\d+/)
    } finally {
      cli("DEL", `${prefix}:t:acme:settings`)
    }
    // with the depth limit out of the way, 10,000 levels overflow the stack formatting the decode error
    const deep = `{"llm_id": "gpt-4", "endpoint": ${nested(10_000)}}`
    const answer = await edge.raw("PUT", "/v1/llms/gpt-4", deep)
    expect(answer.status, answer.text).toBe(500)
    expect(answer.body.error).toMatchObject({ code: "internal_error", message: "the request failed unexpectedly" })
    expect((await edge.call("GET", "/v1/settings")).status).toBe(200)
  })

  it("503 unavailable with Retry-After while Redis is down, and answers again once it is back", async () => {
    const llm = {
      llm_id: "gpt-4",
      endpoint: "https://api.openai.com/v1/chat/completions",
      auth: { type: "api_key", key: "openai" }
    }
    expect((await edge.call("PUT", "/v1/llms/gpt-4", llm)).status).toBe(200)
    redis.kill()
    await redis.waitExit()
    const requests: ReadonlyArray<readonly [string, string, unknown?]> = [
      ["GET", "/v1/settings"],
      ["PUT", "/v1/settings", { default_llm: "gpt-4" }],
      ["PUT", "/v1/llms/gpt-4", llm],
      ["GET", "/v1/llms"],
      ["GET", "/v1/connections"],
      ["PUT", "/v1/connections/slack", { type: "api_key", secret: "slack_token" }],
      ["POST", "/v1/tasks", { input: { steps: [{ id: "a", tool: "probe.echo", input: { value: 1 } }] } }]
    ]
    const answers = await Promise.all(requests.map(([method, path, body]) => edge.call(method, path, body)))
    answers.forEach((answer, i) => expectUnavailable(answer, `${requests[i]![0]} ${requests[i]![1]}`))

    await redis.start()
    let settings: Answer | undefined
    for (let i = 0; i < 100 && settings?.status !== 200; i++) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, 100))
      settings = await edge.call("GET", "/v1/settings")
    }
    expect(settings!.status, settings!.text).toBe(200)
    expect((await edge.call("PUT", "/v1/llms/gpt-4", llm)).status).toBe(200)
  })
})

describe("an LLM that repeats its API key", () => {
  // not a credential shape (no sk-, no Bearer): only masking the call's own key catches it
  const key = "k3y-Zq9v7L2mWx4Pt8Rb"
  const probes = makeProbes()
  let llm: Awaited<ReturnType<typeof startFakeOpenAi>>
  let edge: Awaited<ReturnType<typeof startEdge>>
  let admin = ""
  const call = (method: string, path: string, body?: unknown) => edge.call(method, path, admin, body)

  beforeAll(async () => {
    llm = await startFakeOpenAi()
    edge = await startEdge(probes)
    admin = await edge.sign({ tenant_id: "acme", role: "admin" })
    expect((await call("PUT", "/v1/secrets/llm_key", { value: key })).status).toBe(204)
    const config = { llm_id: "gpt-4", endpoint: llm.url, auth: { type: "api_key", key: "llm_key" } }
    expect((await call("PUT", "/v1/llms/gpt-4", config)).status).toBe(200)
    expect((await call("PUT", "/v1/settings", { default_llm: "gpt-4" })).status).toBe(200)
  })
  afterAll(async () => {
    await edge?.close()
    await llm?.close()
  })
  beforeEach(() => probes.reset())

  it("the key it was called with is masked in tool arguments, the answer, the task, its events and the audit", async () => {
    const bearer = (authorization: string | undefined) => authorization!.replace(/^Bearer /, "")
    // the second copy hides its first character behind a JSON escape: masking must see the parsed text
    const escaped = (k: string) => `\\u${k.charCodeAt(0).toString(16).padStart(4, "0")}${k.slice(1)}`
    llm.script(
      (r) => ({
        kind: "tools",
        calls: [{
          name: "probe-echo",
          arguments: `{"value": {"plain": "key=${bearer(r.authorization)}", "escaped": "${
            escaped(bearer(r.authorization))
          }"}}`
        }]
      }),
      (r) => ({ kind: "answer", content: `Done. I was called with ${bearer(r.authorization)}.` })
    )
    const res = await call("POST", "/v1/tasks", { input: "Echo something", timeout_ms: 20_000 })
    expect(res.status, res.text).toBe(200)
    const task = res.body
    expect(task.status).toBe("succeeded")
    // the key was really sent, and really echoed
    expect(llm.received.map((r) => r.authorization)).toEqual([`Bearer ${key}`, `Bearer ${key}`])

    expect(task.output).toBe("Done. I was called with <redacted>.")
    expect(probes.calls).toEqual([{
      tool: "probe.echo",
      input: { value: { plain: "key=<redacted>", escaped: "<redacted>" } }
    }])
    expect(res.text).not.toContain(key)
    // nor does it go back to the model in the conversation
    expect(JSON.stringify(llm.received[1]!.body.messages)).not.toContain(key)

    const events = await fetch(`${edge.base}/v1/tasks/${task.task_id}/events`, {
      headers: { authorization: `Bearer ${admin}` }
    })
    const stream = await events.text()
    expect(stream).toContain("event: llm.completed")
    expect(stream).toContain("event: task.succeeded")
    expect(stream).not.toContain(key)
    expect((await call("GET", `/v1/tasks/${task.task_id}`)).text).not.toContain(key)

    const audit = edge.audit()
    expect(audit.map((r) => r.action)).toEqual(expect.arrayContaining(["llm.call", "tool.invoke"]))
    expect(JSON.stringify(audit)).not.toContain(key)
  })
})
