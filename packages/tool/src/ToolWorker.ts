import { AuditLog } from "@altan/domain/AuditLog"
import { Connection, llmProvider } from "@altan/domain/Connection"
import { Egress, type EgressResponse } from "@altan/domain/Egress"
import { parseEntityId } from "@altan/domain/Ids"
import { LlmNotConfigured, LlmUnavailable } from "@altan/domain/Llm"
import { maskSecrets } from "@altan/domain/Secret"
import { ToolFailed, toolFailedFields, ToolNotFound, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { cacheKey, ToolCache } from "./ToolCache.js"
import { ToolRegistry } from "./ToolRegistry.js"

const rateHeaderName = /ratelimit|rate-limit|retry-after|sforce-limit-info/i

/** The response headers a provider's budget learns from (`Retry-After`, `X-RateLimit-*`, vendor ones); none: undefined. */
const rateLimitHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> | undefined => {
  let out: Record<string, string> | undefined
  for (const [name, value] of Object.entries(headers)) {
    if (rateHeaderName.test(name)) (out ??= {})[name] = value
  }
  return out
}

/** `https://host/path` of a request: no query string or userinfo, which may hold tokens. */
const safeTarget = (raw: string) => {
  try {
    const url = new URL(raw)
    // webhook URLs carry their secret in the path (Slack hooks, bot tokens): long opaque segments are masked
    const path = url.pathname.split("/").map((segment) =>
      segment.length >= 16 && /\d/.test(segment) && /[A-Za-z]/.test(segment) ? "<redacted>" : segment
    ).join("/")
    return `${url.protocol}//${url.host}${path}`
  } catch {
    return "invalid-url"
  }
}

/** `host[:port]` of a configured base URL: the tenant chose it, so its tools may reach it. */
const hostOf = (url: string) => new URL(url).host

/** `ToolWorker[tenant/tool]`: validates the input against the tool's schema, then runs it. */
export const ToolWorkerLive = Layer.unwrapEffect(Effect.gen(function*() {
  const connections = yield* Connection.client
  return ToolWorker.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key: toolId, tenantId } = parseEntityId(address.entityId)
      const registry = yield* ToolRegistry
      const egress = yield* Egress
      const cache = yield* ToolCache
      const audit = yield* AuditLog
      const attributes = { "tenant.id": tenantId, "tool.id": toolId }
      /** Every request to a third party is audited: where (host and path, no query), how it went, how long. */
      const auditRequest =
        (request: { readonly url: string; readonly method: string }) =>
        <E extends { readonly _tag: string }>(effect: Effect.Effect<EgressResponse, E>) =>
          Effect.gen(function*() {
            const started = yield* Clock.currentTimeMillis
            const exit = yield* Effect.exit(effect)
            const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
            yield* audit.record({
              tenant_id: tenantId,
              action: "http.request",
              target: safeTarget(request.url),
              outcome: Exit.isSuccess(exit) && exit.value.status < 400
                ? "ok"
                : Option.exists(error, (e) => e._tag === "EgressDenied")
                ? "denied"
                : "failed",
              latency_ms: (yield* Clock.currentTimeMillis) - started,
              details: {
                tool: toolId,
                method: request.method,
                ...(Exit.isSuccess(exit) ? { status: exit.value.status } : {}),
                ...(Option.isSome(error) ? { error: error.value._tag } : {})
              }
            })
            return yield* exit
          })
      return ToolWorker.of({
        Execute: ({ payload }) =>
          Effect.gen(function*() {
            const tool = yield* registry.get(tenantId, toolId)
            const input = yield* tool.decode(payload.input)
            const baseUrls = payload.base_urls ?? {}
            const allowHosts = [
              ...(payload.egress_allowlist ?? []),
              ...tool.hosts,
              ...Object.values(baseUrls).map(hostOf)
            ]
            const key = tool.spec.cacheable ? cacheKey(tenantId, toolId, input) : undefined
            if (key) {
              const hit = yield* cache.get(key)
              if (Option.isSome(hit)) return { output: hit.value, cached: true }
            }
            // whichever header the tenant's credential travels in, it never follows a redirect to another origin
            const credentialHeaders = payload.credential ? [payload.credential.header] : []
            // what the provider said about its limits, handed back for the connection's budget
            let rateHeaders: Record<string, string> | undefined
            const output = yield* tool.run(input, {
              tenantId,
              credential: payload.credential,
              http: (request) =>
                egress.request({ ...request, allowHosts, credentialHeaders }).pipe(
                  Effect.tap((response) => {
                    rateHeaders = rateLimitHeaders(response.headers)
                  }),
                  auditRequest(request)
                ),
              baseUrl: (provider) => baseUrls[provider],
              idempotencyKey: payload.idempotency_key,
              complete: (messages) => {
                const [first, ...fallbacks] = payload.llms ?? []
                if (first === undefined) {
                  return Effect.fail(
                    new LlmNotConfigured({
                      message: "the tenant has no LLM: set default_llm with PUT /v1/settings or llm_id on the task"
                    })
                  )
                }
                const unreachable = (e: { readonly _tag: string }) =>
                  Effect.fail(
                    new LlmUnavailable({ message: `the LLM connection could not be reached (${e._tag})`, attempts: [] })
                  )
                return connections(`${tenantId}/${llmProvider(first)}`).Complete({
                  messages,
                  tools: [],
                  fallbacks,
                  ...(payload.task_id ? { task_id: payload.task_id } : {})
                }).pipe(Effect.catchTags({
                  MailboxFull: unreachable,
                  AlreadyProcessingMessage: unreachable,
                  PersistenceError: unreachable
                }))
              }
            }).pipe(
              Effect.mapError((e) => {
                // an upstream may echo the credential it was sent: mask it before the error goes anywhere
                const sent = payload.credential ? [Redacted.value(payload.credential.value)] : []
                const fields = toolFailedFields(e)
                return new ToolFailed({
                  ...fields,
                  message: maskSecrets(fields.message, sent),
                  ...(fields.body_excerpt !== undefined
                    ? { body_excerpt: maskSecrets(fields.body_excerpt, sent) }
                    : {}),
                  ...(rateHeaders !== undefined ? { rate_headers: rateHeaders } : {})
                })
              })
            )
            if (key) yield* cache.set(key, output)
            return { output, cached: false, ...(rateHeaders ? { rate_headers: rateHeaders } : {}) }
          }).pipe(Effect.withSpan("ToolWorker.execute", { attributes, captureStackTrace: false })),
        Describe: () =>
          registry.get(tenantId, toolId).pipe(
            Effect.map((tool) => tool.spec),
            Effect.withSpan("ToolWorker.describe", { attributes, captureStackTrace: false })
          ),
        // answered by `ToolWorker[tenant/_catalog]`; any entity of the tenant would give the same list
        PutTool: ({ payload }) =>
          registry.put(tenantId, payload.definition).pipe(
            Effect.map((tool) => tool.spec),
            Effect.withSpan("ToolWorker.putTool", {
              attributes: { ...attributes, "tool.id": payload.definition.tool_id },
              captureStackTrace: false
            })
          ),
        GetTool: ({ payload }) =>
          Effect.all([registry.get(tenantId, payload.tool_id), registry.definition(tenantId, payload.tool_id)]).pipe(
            Effect.map(([tool, definition]) =>
              Option.isSome(definition) ? { spec: tool.spec, definition: definition.value } : { spec: tool.spec }
            )
          ),
        DeleteTool: ({ payload }) =>
          Effect.flatMap(
            registry.remove(tenantId, payload.tool_id),
            (removed) => removed ? Effect.void : Effect.fail(new ToolNotFound({ tool_id: payload.tool_id }))
          ),
        List: () =>
          registry.list(tenantId).pipe(
            Effect.map((tools) => tools.map((tool) => tool.spec)),
            Effect.withSpan("ToolWorker.list", { attributes, captureStackTrace: false })
          )
      })
    }),
    { concurrency: "unbounded", maxIdleTime: "5 minutes" }
  )
}))
