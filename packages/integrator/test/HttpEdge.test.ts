import { AuditLog } from "@altan/audit/AuditLog"
import * as MemorySink from "@altan/audit/MemorySink"
import { Api } from "@altan/domain/Api"
import { InvalidRequest, NotFound, TooManyRequests, Unavailable } from "@altan/domain/Errors"
import type { TenantId, UserId } from "@altan/domain/Ids"
import { Principal } from "@altan/domain/Principal"
import { HttpApiDecodeError } from "@effect/platform/HttpApiError"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { nestsDeeperThan } from "../src/internal/bodyLimit.js"
import { errorEnvelope, invalidRequestOf, isStorageOutage } from "../src/internal/errorEnvelope.js"
import { auditResponse, configResource, type RequestAudit } from "../src/internal/responseAudit.js"

const request = (method: string, url: string) =>
  HttpServerRequest.fromWeb(new Request(`http://localhost${url}`, { method }))

/** Runs `app` behind the error envelope: its exit, and the answer's `Retry-After` once pre-response handlers ran. */
const throughEnvelope = (app: HttpApp.Default<unknown>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(errorEnvelope(app as HttpApp.Default))
    const handler = yield* FiberRef.get(HttpApp.currentPreResponseHandlers)
    const finished = Option.isNone(handler)
      ? HttpServerResponse.empty()
      : yield* handler.value(request("GET", "/"), HttpServerResponse.empty())
    return { exit, retryAfter: finished.headers["retry-after"] }
  }).pipe(
    Effect.provideService(HttpServerRequest.HttpServerRequest, request("GET", "/")),
    Logger.withMinimumLogLevel(LogLevel.None)
  )

const failureOf = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

describe("error envelope", () => {
  it("names the deepest field of a decode failure", () => {
    const error = invalidRequestOf(
      new HttpApiDecodeError({
        message: "the whole tree",
        issues: [
          { _tag: "Type", path: ["input"], message: "Expected string" },
          { _tag: "Missing", path: ["input", "steps", 0, "id"], message: "is missing" }
        ]
      })
    )
    expect(error).toBeInstanceOf(InvalidRequest)
    expect(error.message).toBe("input.steps.0.id: is required")
    expect(error.details).toEqual({
      field: "input.steps.0.id",
      issues: [
        { field: "input", message: "must be a string" },
        { field: "input.steps.0.id", message: "is required" }
      ]
    })
    expect(invalidRequestOf(new HttpApiDecodeError({ message: "m", issues: [] })).message).toBe("m")
    const body = invalidRequestOf(
      new HttpApiDecodeError({ message: "m", issues: [{ _tag: "Type", path: [], message: "Expected object" }] })
    )
    expect(body.message).toBe("body: must be an object")
  })

  it("says what to send in the API's words, not the schema library's", () => {
    const messageOf = (issues: Array<{ path: Array<string | number>; message: string }>) =>
      invalidRequestOf(
        new HttpApiDecodeError({ message: "m", issues: issues.map((i) => ({ _tag: "Type" as const, ...i })) })
      )
    // a union's alternatives together; an optional's `undefined` left out
    const mode = messageOf([
      { path: ["mode"], message: `Expected "sync", actual "fast"` },
      { path: ["mode"], message: `Expected "async", actual "fast"` },
      { path: ["mode"], message: `Expected undefined, actual "fast"` }
    ])
    expect(mode.message).toBe(`mode: must be one of "sync" or "async" (got "fast")`)
    expect(mode.details!["issues"]).toHaveLength(2)
    expect(
      messageOf([
        { path: ["input"], message: "Expected string, actual 42" },
        { path: ["input"], message: "Expected { readonly steps: minItems(1) & maxItems(100) }, actual 42" }
      ]).message
    ).toBe("input: must be a string or an object (got 42)")
    expect(
      messageOf([{ path: ["input", "steps"], message: "Expected an array of at least 1 item(s), actual []" }])
        .message
    ).toBe("input.steps: must have at least 1 item (got [])")
    expect(messageOf([{ path: ["max_steps"], message: "Expected an integer, actual 1.5" }]).message).toBe(
      "max_steps: must be a whole number (got 1.5)"
    )
    expect(messageOf([{ path: ["inputs"], message: `is unexpected, expected: "input" | "mode"` }]).message).toBe(
      "inputs: is not a field of this request (its fields: input, mode)"
    )
    // a message of our own (a refinement's) is kept as written
    expect(messageOf([{ path: ["session_id"], message: "session_id must be 1-128 letters" }]).message).toBe(
      "session_id: session_id must be 1-128 letters"
    )
    // a long value is cut short
    expect(messageOf([{ path: ["x"], message: `Expected number, actual "${"y".repeat(200)}"` }]).message.length)
      .toBeLessThan(100)
  })

  it.effect("a decode failure, raised or as a defect, is a 400 invalid_request", () =>
    Effect.gen(function*() {
      const decode = new HttpApiDecodeError({ message: "m", issues: [{ _tag: "Type", path: ["a"], message: "bad" }] })
      for (const app of [Effect.fail(decode), Effect.die(decode)]) {
        const failure = failureOf((yield* throughEnvelope(app)).exit)
        expect(failure).toBeInstanceOf(InvalidRequest)
        expect(failure).toMatchObject({ message: "a: bad", details: { field: "a" } })
      }
    }))

  it.effect("a body the framework cannot read as JSON is a 400 on the body", () =>
    Effect.gen(function*() {
      const unreadable = new HttpServerError.RequestError({ request: request("POST", "/v1/tasks"), reason: "Decode" })
      const { exit } = yield* throughEnvelope(Effect.die(unreadable))
      expect(failureOf(exit)).toMatchObject({
        _tag: "InvalidRequest",
        message: "the request body is not valid JSON",
        details: { field: "body" }
      })
    }))

  it.effect("a 429 or a 503 passes through with a Retry-After from its details, 1 s by default", () =>
    Effect.gen(function*() {
      const limited = new TooManyRequests({ message: "slow down", details: { retry_after_ms: 2500 } })
      const limitedAnswer = yield* throughEnvelope(Effect.fail(limited))
      expect(failureOf(limitedAnswer.exit)).toBe(limited)
      expect(limitedAnswer.retryAfter).toBe("3")
      const away = new Unavailable({ message: "away" })
      const awayAnswer = yield* throughEnvelope(Effect.fail(away))
      expect(failureOf(awayAnswer.exit)).toBe(away)
      expect(awayAnswer.retryAfter).toBe("1")
    }))

  it.effect("a storage outage raised as a defect is a 503 with Retry-After and the trace id", () =>
    Effect.gen(function*() {
      const outage = new Error("write failed", { cause: { code: "ECONNREFUSED" } })
      const { exit, retryAfter } = yield* Effect.withSpan(throughEnvelope(Effect.die(outage)), "request")
      const failure = failureOf(exit)
      expect(failure).toBeInstanceOf(Unavailable)
      expect(failure).toMatchObject({
        message: "storage is unavailable; retry later",
        details: { trace_id: expect.stringMatching(/^[0-9a-f]{32}$/) }
      })
      expect(retryAfter).toBe("1")
    }))

  it.effect("any other defect is a 500 internal_error envelope that gives out nothing but the trace id", () =>
    Effect.gen(function*() {
      const { exit } = yield* Effect.withSpan(throughEnvelope(Effect.die(new Error("secret detail"))), "request")
      expect(Exit.isSuccess(exit)).toBe(true)
      const response = Exit.isSuccess(exit) ? exit.value : undefined
      expect(response?.status).toBe(500)
      const body = response?.body._tag === "Uint8Array" ? new TextDecoder().decode(response.body.body) : ""
      expect(JSON.parse(body)).toEqual({
        error: {
          code: "internal_error",
          message: "the request failed unexpectedly",
          details: { trace_id: expect.stringMatching(/^[0-9a-f]{32}$/) }
        }
      })
      expect(body).not.toContain("secret detail")
      // outside a span there is no trace id to give
      const untraced = (yield* throughEnvelope(Effect.die(new Error("x")))).exit
      expect(Exit.isSuccess(untraced) && untraced.value.status).toBe(500)
    }))

  it.effect("the API's own errors, interruptions and responses raised as defects pass through as they are", () =>
    Effect.gen(function*() {
      const notFound = new NotFound({ message: "no such task" })
      const found = yield* throughEnvelope(Effect.fail(notFound))
      expect(failureOf(found.exit)).toBe(notFound)
      expect(found.retryAfter).toBeUndefined()
      const interrupted = (yield* throughEnvelope(Effect.interrupt)).exit
      expect(Exit.isInterrupted(interrupted)).toBe(true)
      const response = HttpServerResponse.text("teapot", { status: 418 })
      const raised = (yield* throughEnvelope(Effect.die(response))).exit
      expect(Exit.isFailure(raised) && Cause.dieOption(raised.cause)).toEqual(Option.some(response))
    }))
})

describe("isStorageOutage", () => {
  it("recognises the stores' errors, ioredis' give-ups and dropped connections, a few causes deep", () => {
    expect(isStorageOutage({ _tag: "RedisError" })).toBe(true)
    expect(isStorageOutage({ _tag: "SecretStoreError" })).toBe(true)
    expect(isStorageOutage({ _tag: "SqlError" })).toBe(true)
    expect(isStorageOutage(Object.assign(new Error("x"), { name: "MaxRetriesPerRequestError" }))).toBe(true)
    expect(isStorageOutage(new Error("Connection is closed."))).toBe(true)
    expect(isStorageOutage(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe(true)
    for (const code of ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH"]) {
      expect(isStorageOutage({ code })).toBe(true)
    }
    const nested = (depth: number): unknown =>
      depth === 0 ? { code: "ECONNRESET" } : new Error("wrap", { cause: nested(depth - 1) })
    expect(isStorageOutage(nested(4))).toBe(true)
    expect(isStorageOutage(nested(5))).toBe(false)
  })

  it("a bug is not an outage", () => {
    expect(isStorageOutage(new TypeError("undefined is not a function"))).toBe(false)
    expect(isStorageOutage({ _tag: "NotFound" })).toBe(false)
    expect(isStorageOutage({ code: "ENOENT" })).toBe(false)
    expect(isStorageOutage("ECONNREFUSED")).toBe(false)
    expect(isStorageOutage(undefined)).toBe(false)
  })
})

// The audit of answers, against the route the real router matched --------------------------------------------

/** Every endpoint of the API on a router, answering the route context it was served with. */
const routeOf = Effect.gen(function*() {
  const last: { matched?: HttpRouter.RouteContext | undefined } = {}
  const capture = Effect.map(HttpRouter.RouteContext, (route) => {
    last.matched = route
    return HttpServerResponse.empty()
  })
  const router = Object.values(Api.groups)
    .flatMap((group) => Object.values(group.endpoints))
    .reduce(
      (router: HttpRouter.HttpRouter, endpoint) => HttpRouter.route(endpoint.method)(endpoint.path, capture)(router),
      HttpRouter.empty
    )
  const app = yield* HttpRouter.toHttpApp(router)
  return (method: string, url: string) =>
    Effect.gen(function*() {
      last.matched = undefined
      yield* Effect.scoped(
        Effect.provideService(Effect.ignore(app), HttpServerRequest.HttpServerRequest, request(method, url))
      )
      return yield* Effect.sync(() => last.matched)
    })
})

/** The target as the edge computed it before, from the URL with a regular expression: the reference. */
const fromUrl = (url: string) => {
  const match = /^\/v1\/(llms|settings|secrets|tools|connections)(?:\/([^/]+))?(?:\/(authorize))?$/.exec(
    url.split("?")[0]!
  )
  return match
    ? {
      target: `${match[1] === "settings" ? "settings" : match[1]!.slice(0, -1)}${
        match[2] ? `:${decodeURIComponent(match[2])}` : ""
      }`,
      operation: match[3]
    }
    : undefined
}

const requests: ReadonlyArray<readonly [string, string]> = [
  ["PUT", "/v1/llms/main"],
  ["GET", "/v1/llms/main"],
  ["GET", "/v1/llms"],
  ["DELETE", "/v1/llms/a%2Fb"],
  ["PUT", "/v1/settings"],
  ["PUT", "/v1/settings?dry=1"],
  ["GET", "/v1/settings"],
  ["PUT", "/v1/secrets/api%20key"],
  ["PUT", "/v1/secrets/caf%C3%A9"],
  ["DELETE", "/v1/secrets/x%25y"],
  ["PUT", "/v1/tools/crm_lookup"],
  ["GET", "/v1/tools/slack.post_message"],
  ["GET", "/v1/tools"],
  ["DELETE", "/v1/tools/crm_note"],
  ["PUT", "/v1/connections/crm"],
  ["POST", "/v1/connections/crm/authorize"],
  ["GET", "/v1/connections"],
  ["DELETE", "/v1/connections/crm"],
  ["POST", "/v1/tasks"],
  ["GET", "/v1/tasks/s.t"],
  ["POST", "/v1/tasks/s.t/cancel"],
  ["DELETE", "/v1/sessions/s"],
  ["GET", "/v1/oauth/callback?state=x"],
  ["GET", "/readyz"]
]

describe("configResource", () => {
  it.effect("names what the URL named before, from the route the router matched", () =>
    Effect.gen(function*() {
      const route = yield* routeOf
      for (const [method, url] of requests) {
        const matched = yield* route(method, url)
        expect(matched, `${method} ${url}`).toBeDefined()
        expect(configResource(matched!.route, matched!.params), `${method} ${url}`).toEqual(fromUrl(url))
      }
    }))

  it("knows the API's configuration endpoints only", () => {
    expect(configResource({ method: "POST", path: "/v1/connections/:provider/authorize" }, { provider: "crm" }))
      .toEqual({ target: "connection:crm", operation: "authorize" })
    expect(configResource({ method: "PUT", path: "/v1/settings" }, {})).toEqual({
      target: "settings",
      operation: undefined
    })
    expect(configResource({ method: "POST", path: "/v1/llms/:llm_id" }, { llm_id: "main" })).toBeUndefined()
    expect(configResource({ method: "GET", path: "/v1/tasks/:task_id" }, { task_id: "s.t" })).toBeUndefined()
  })
})

describe("auditResponse", () => {
  const ada = new Principal({ tenantId: "acme" as TenantId, userId: "ada" as UserId, role: "admin" })

  const audited = (method: string, url: string, status: number, verified = true) =>
    Effect.gen(function*() {
      const route = yield* routeOf
      const served: RequestAudit["Type"] = { principal: verified ? ada : undefined, route: yield* route(method, url) }
      const memory = yield* MemorySink.AuditMemory
      memory.clear()
      const response = HttpServerResponse.empty({ status })
      const answered = yield* auditResponse(yield* AuditLog, served)(request(method, url), response)
      expect(answered).toBe(response)
      return memory.records().map(({ action, details, outcome, target, tenant_id, user }) => ({
        tenant_id,
        user,
        action,
        target,
        outcome,
        details
      }))
    }).pipe(Effect.provide(MemorySink.layer))

  it.effect("records a configuration write with its outcome, never a read", () =>
    Effect.gen(function*() {
      expect(yield* audited("PUT", "/v1/secrets/api%20key", 204)).toEqual([{
        tenant_id: "acme",
        user: "ada",
        action: "config.change",
        target: "secret:api key",
        outcome: "ok",
        details: { method: "PUT", status: 204 }
      }])
      expect(yield* audited("POST", "/v1/connections/crm/authorize", 409)).toEqual([{
        tenant_id: "acme",
        user: "ada",
        action: "config.change",
        target: "connection:crm",
        outcome: "failed",
        details: { method: "POST", status: 409, operation: "authorize" }
      }])
      expect(yield* audited("GET", "/v1/llms/main", 200)).toEqual([])
      expect(yield* audited("POST", "/v1/tasks", 200)).toEqual([])
    }))

  it.effect("records a refusal for the caller's role on any route, named by the request when it is not configuration", () =>
    Effect.gen(function*() {
      expect(yield* audited("GET", "/v1/llms", 403)).toMatchObject([
        { action: "authz.failure", target: "llm", outcome: "denied", details: { method: "GET", status: 403 } }
      ])
      expect(yield* audited("GET", "/v1/tasks/s.t?wait=1", 403)).toMatchObject([
        { action: "authz.failure", target: "GET /v1/tasks/s.t", outcome: "denied" }
      ])
    }))

  it.effect("records nothing for a caller whose token was not verified", () =>
    Effect.gen(function*() {
      expect(yield* audited("PUT", "/v1/llms/main", 200, false)).toEqual([])
      expect(yield* audited("PUT", "/v1/llms/main", 403, false)).toEqual([])
    }))

  it.effect("a trailing slash does not hide a write, nor is a ;parameter taken into the name (the regular expression over the URL got both wrong)", () =>
    Effect.gen(function*() {
      expect(yield* audited("PUT", "/v1/llms/main/", 200)).toMatchObject([{ target: "llm:main", outcome: "ok" }])
      expect(yield* audited("DELETE", "/v1/secrets/k;v=1", 204)).toMatchObject([{ target: "secret:k" }])
    }))
})

describe("nestsDeeperThan", () => {
  const bytes = (text: string) => new TextEncoder().encode(text)

  it("counts objects and arrays, not brackets inside strings or escaped quotes", () => {
    expect(nestsDeeperThan(bytes(`{"a":[{"b":1}]}`), 3)).toBe(false)
    expect(nestsDeeperThan(bytes(`{"a":[{"b":[1]}]}`), 3)).toBe(true)
    expect(nestsDeeperThan(bytes(`{"a":"[[[[{{{{"}`), 1)).toBe(false)
    expect(nestsDeeperThan(bytes(`{"a":"\\"[[["}`), 1)).toBe(false)
    expect(nestsDeeperThan(bytes(`{"a":"\\\\"}[[`), 2)).toBe(false)
    expect(nestsDeeperThan(bytes(`{"a":"\\\\",[[[]]]}`), 3)).toBe(true)
  })

  it("counts depth per line of ndjson, and stray closers do not go below zero", () => {
    expect(nestsDeeperThan(bytes(`[[1]]\n[[2]]\n`), 2)).toBe(false)
    expect(nestsDeeperThan(bytes(`]]]][[[`), 2)).toBe(true)
    expect(nestsDeeperThan(bytes(`"café ☕ [[["`), 0)).toBe(false)
  })
})
