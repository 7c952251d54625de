import { AuditLog } from "@altan/audit/AuditLog"
import { BudgetExhausted, Connection, ConnectionRequired, llmConnectionId } from "@altan/domain/Connection"
import { Egress, EgressDenied, type EgressResponse } from "@altan/domain/Egress"
import { isClusterError } from "@altan/domain/EntityCall"
import { InvalidRequest, NotFound, Unavailable, UpstreamFailed } from "@altan/domain/Errors"
import { parseEntityId } from "@altan/domain/Ids"
import { LlmNotConfigured, LlmUnavailable } from "@altan/domain/Llm"
import { mcpConfigOf, type McpServer, type McpServerConfig, mcpServerOfTool } from "@altan/domain/McpServers"
import { maskSecrets, maskValuesDeep } from "@altan/domain/Secret"
import {
  type Credential,
  ToolFailed,
  toolFailedFields,
  ToolNotFound,
  type ToolResult,
  ToolWorker
} from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { type Claim, ExecutionLedger, leaseMillis, type LedgerUnavailable, type Outcome } from "./ExecutionLedger.js"
import * as McpTool from "./McpTool.js"
import { failOnDefect } from "./Tool.js"
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

/** The longest a tool call without its own `timeout_ms` can take (the egress guard's total limit, by default). */
const maxCallMillis = 30_000
/** Beyond a call's own limit, how long an execution that started elsewhere is waited for before it is unknown. */
const callMarginMillis = 5_000

/** The ledger cannot be read: nothing was sent, and the caller may ask again later. */
const ledgerFailed = (e: LedgerUnavailable) => new Unavailable({ message: e.message })

/** Adds to a set that keeps its newest 1 000 entries. */
const remember = (set: Set<string>, key: string) => {
  set.add(key)
  if (set.size > 1_000) set.delete(set.values().next().value!)
}

/** An execution of the call started before and its outcome is unknown: it is not sent again. */
const unknownOutcome = (toolId: string) =>
  new ToolFailed({
    tool_id: toolId,
    message: `an earlier execution of this ${toolId} call started and its outcome is unknown ` +
      `(it was cut off mid-call); it was not sent again, as that could apply it twice`,
    retryable: false,
    unknown_outcome: true
  })

const toOutcome = (exit: Exit.Exit<ToolResult, ToolFailed>): Outcome =>
  Exit.isSuccess(exit)
    ? { ok: { output: exit.value.output } }
    : {
      failed: Option.match(Cause.failureOption(exit.cause), {
        onNone: () => ({ message: Cause.pretty(exit.cause), retryable: false }),
        onSome: (e) => toolFailedFields(e)
      })
    }

const fromOutcome = (outcome: Outcome): Effect.Effect<ToolResult, ToolFailed> =>
  "ok" in outcome
    ? Effect.succeed({ output: outcome.ok.output, cached: false })
    : Effect.fail(new ToolFailed(outcome.failed as unknown as ConstructorParameters<typeof ToolFailed>[0]))

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
      const ledger = yield* ExecutionLedger
      const audit = yield* AuditLog
      const attributes = { "altan.tenant_id": tenantId, "altan.tool_id": toolId }
      /** Every request to a third party is audited: where (host and path, no query), how it went, how long. */
      const auditRequest =
        (request: { readonly url: string; readonly method: string }) =>
        <E extends { readonly _tag: string }>(effect: Effect.Effect<EgressResponse, E>) =>
          AuditLog.timed(effect, audit, (exit, latency_ms) => {
            const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
            return {
              tenant_id: tenantId,
              action: "http.request",
              target: safeTarget(request.url),
              outcome: Exit.isSuccess(exit) && exit.value.status < 400
                ? "ok"
                : Option.exists(error, EgressDenied.is)
                ? "denied"
                : "failed",
              latency_ms,
              details: {
                tool: toolId,
                method: request.method,
                ...(Exit.isSuccess(exit) ? { status: exit.value.status } : {}),
                ...(Option.isSome(error) ? { error: error.value._tag } : {})
              }
            }
          })
      const runner = yield* Entity.CurrentRunnerAddress
      const runnerId = `${runner.host}:${runner.port}`
      /** Executions of this tool running in this process, by execution key: a repeat joins the one in flight. */
      const inFlight = new Map<string, Deferred.Deferred<ToolResult, ToolFailed | Unavailable>>()
      /** Keys whose claim failed here without an answer: it may have been applied, and nothing ran. */
      const uncertain = new Set<string>()

      /**
       * Runs a call with side effects at most once per execution key. The key is claimed in the ledger before the
       * call goes out and the outcome recorded when it returns; a repeat of the key (a redelivery, a resumed task)
       * joins the execution in flight here, waits for one running elsewhere, or gets the recorded outcome. An
       * execution that started and never recorded an outcome is not repeated: the caller learns `unknown_outcome`
       * (a tool that sends an idempotency key is the exception: the vendor deduplicates, so it runs again).
       */
      const once = (
        key: string,
        spec: { readonly idempotency_key?: boolean | undefined; readonly timeout_ms?: number | undefined },
        run: Effect.Effect<ToolResult, ToolFailed>
      ): Effect.Effect<ToolResult, ToolFailed | Unavailable> =>
        Effect.suspend(() => {
          const joined = inFlight.get(key)
          if (joined) return Deferred.await(joined)
          // registered before the claim, so a repeat arriving meanwhile joins instead of claiming too
          const done = Deferred.unsafeMake<ToolResult, ToolFailed | Unavailable>(FiberId.none)
          inFlight.set(key, done)
          return Effect.gen(function*() {
            const deadline = (yield* Clock.currentTimeMillis) + (spec.timeout_ms ?? maxCallMillis) + callMarginMillis
            const claim = yield* ledger.claim(tenantId, toolId, key, { runner: runnerId, deadline }).pipe(
              Effect.tapError(() => Effect.sync(() => remember(uncertain, key))),
              Effect.mapError(ledgerFailed)
            )
            // "started here, not in flight" after a claim of ours whose answer was lost: that claim, never run
            const ours = claim._tag === "Started" && claim.runner === runnerId && uncertain.delete(key)
            const settled = ours
              ? { _tag: "Claimed" as const }
              : claim._tag === "Started" && spec.idempotency_key !== true
              ? yield* awaitOutcome(key, claim)
              : claim
            if (settled._tag === "Done") return yield* fromOutcome(settled.outcome)
            // while it runs, the lease says it is alive: a runner that died is known dead within seconds
            const renew = Effect.sleep(Duration.millis(leaseMillis / 3)).pipe(
              Effect.zipRight(Effect.ignore(ledger.renew(tenantId, toolId, key))),
              Effect.forever
            )
            const exit = yield* Effect.exit(Effect.raceFirst(run, renew))
            yield* ledger.finish(tenantId, toolId, key, toOutcome(exit)).pipe(
              Effect.retry({ times: 3, schedule: Schedule.exponential("100 millis") }),
              // the caller gets its answer; a later repeat of the key will learn the outcome is unknown
              Effect.catchAll((e) => Effect.logWarning(`cannot record the outcome of ${toolId} ${key}: ${e.message}`))
            )
            return yield* exit
          }).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Effect.zipRight(Deferred.done(done, exit), exit)),
            Effect.onInterrupt(() => Deferred.fail(done, unknownOutcome(toolId))),
            Effect.ensuring(Effect.sync(() => inFlight.delete(key)))
          )
        })

      /**
       * An execution that started elsewhere: waited for while its runner keeps its lease (a tool runner shutting
       * down finishes its calls), then its outcome, or unknown.
       */
      const awaitOutcome = (key: string, started: Extract<Claim, { _tag: "Started" }>) =>
        Effect.gen(function*() {
          let claim: Claim = started
          // started here but not in flight any more: it was cut off in this process, nothing to wait for
          while (claim._tag === "Started" && claim.alive && claim.runner !== runnerId) {
            if ((yield* Clock.currentTimeMillis) >= claim.deadline) break
            yield* Effect.sleep("250 millis")
            claim = yield* ledger.read(tenantId, toolId, key).pipe(Effect.mapError(ledgerFailed))
          }
          if (claim._tag === "Done") return claim
          return yield* unknownOutcome(toolId)
        })

      /**
       * Lists a remote MCP server's tools through the guard (the tenant's allowlist, its credential for the server) and
       * stores them as its tools, replacing what it had; on `PUT`, refresh, and a `tools/list_changed` said mid-call.
       */
      const importMcpServer = Effect.fn("ToolWorker.importMcpServer", {
        attributes: { "altan.tenant_id": tenantId },
        captureStackTrace: false
      })(function*(payload: {
        readonly server_id: string
        readonly config: McpServerConfig
        readonly credential?: Credential | undefined
        readonly egress_allowlist: ReadonlyArray<string>
        readonly pending?: boolean | undefined
      }) {
        const { config, credential, server_id } = payload
        yield* Effect.annotateCurrentSpan("altan.mcp_server", server_id)
        if (payload.pending === true) {
          // waits for its OAuth2 grant: kept as configured, its tools (of an earlier grant) gone until it is given
          const waiting: McpServer = {
            server_id,
            ...config,
            imported: [],
            refreshed_at: new Date(yield* Clock.currentTimeMillis).toISOString(),
            status: "needs_authorization"
          }
          yield* registry.putMcpServer(tenantId, waiting)
          return waiting
        }
        const credentialHeaders = credential ? [credential.header] : []
        const sent: Array<string> = credential ? [Redacted.value(credential.value)] : []
        const listed = yield* McpTool.listTools(
          config.url,
          credential,
          (request) => egress.request({ ...request, allowHosts: payload.egress_allowlist, credentialHeaders }),
          server_id,
          config.tools
        ).pipe(
          Effect.mapError(({ error, refused }) =>
            refused !== undefined && EgressDenied.is(refused)
              ? new InvalidRequest({
                code: "egress_denied",
                message: `${McpTool.importRefusal(refused)}: put the server's host in the tenant's egress_allowlist`,
                details: { field: "url" }
              })
              : new UpstreamFailed({
                message: maskSecrets(
                  refused !== undefined
                    ? McpTool.importRefusal(refused)
                    : `the MCP server did not list its tools: ${McpTool.messageOf(error)}`,
                  sent
                ),
                // a 401 tells the server's connection to refresh its token and ask again
                details: { server_id, ...(McpTool.statusOf(error) ? { status: McpTool.statusOf(error) } : {}) }
              })
          )
        )
        // two of its names that become one tool id, or a schema that does not compile: the admin narrows `tools`
        const ids = new Map<string, string>()
        for (const tool of listed.tools) {
          const other = ids.get(tool.tool_id)
          if (other !== undefined) {
            return yield* new InvalidRequest({
              code: "invalid_mcp_server",
              message: `the server's tools "${other}" and "${tool.name}" would both be ${tool.tool_id}; ` +
                `leave one out with "tools"`,
              details: { field: "tools" }
            })
          }
          ids.set(tool.tool_id, tool.name)
        }
        const server: McpServer = {
          server_id,
          ...config,
          ...(listed.protocolVersion ? { protocol_version: listed.protocolVersion } : {}),
          imported: listed.tools,
          refreshed_at: new Date(yield* Clock.currentTimeMillis).toISOString(),
          status: "ready"
        }
        for (const tool of listed.tools) {
          if (Either.isLeft(McpTool.fromImported(server, tool))) {
            return yield* new InvalidRequest({
              code: "invalid_mcp_server",
              message: `the input schema of the server's tool "${tool.name}" is not a valid JSON Schema; ` +
                `leave it out with "tools"`,
              details: { field: "tools" }
            })
          }
        }
        yield* registry.putMcpServer(tenantId, server)
        return server
      })

      return ToolWorker.of({
        Execute: Effect.fn("ToolWorker.execute", { attributes, captureStackTrace: false })(function*({ payload }) {
          if (payload.task_id) yield* Effect.annotateCurrentSpan("altan.task_id", payload.task_id)
          const tool = yield* registry.get(tenantId, toolId)
          yield* Effect.annotateCurrentSpan("altan.provider", tool.spec.provider)
          const input = yield* tool.decode(payload.input)
          // nothing to call the provider with: the call waits for the tenant's connection (the step's, not a failure)
          if (tool.spec.needs_connection && payload.credential === undefined) {
            return yield* new ConnectionRequired({ provider: tool.spec.provider, reason: "missing" })
          }
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
          // an upstream may echo the credential it was sent: masked before output or error go anywhere
          const sent = payload.credential ? [Redacted.value(payload.credential.value)] : []
          // what the provider said about its limits, handed back for the connection's budget
          let rateHeaders: Record<string, string> | undefined
          // a budget the tool's LLM turn found spent
          let spent: BudgetExhausted | undefined
          const run = tool.run(input, {
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
            // a remote MCP server said its tools changed: imported again, with this call's credential, beside the call
            toolsChanged: () => {
              const serverId = mcpServerOfTool(toolId)
              if (serverId === undefined) return Effect.void
              return Effect.gen(function*() {
                const stored = yield* registry.getMcpServer(tenantId, serverId)
                if (Option.isNone(stored)) return
                yield* importMcpServer({
                  server_id: serverId,
                  config: mcpConfigOf(stored.value),
                  credential: payload.credential,
                  egress_allowlist: payload.egress_allowlist ?? []
                })
              }).pipe(
                Effect.catchAll((e) =>
                  Effect.logWarning(`could not import the tools of MCP server ${serverId}: ${e.message}`)
                ),
                Effect.forkDaemon,
                Effect.asVoid
              )
            },
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
              return connections(llmConnectionId(tenantId, first)).Complete({
                messages,
                tools: [],
                fallbacks,
                ...(payload.task_id ? { task_id: payload.task_id } : {})
              }).pipe(
                Effect.catchIf((e) => Unavailable.is(e) || isClusterError(e), unreachable),
                // the tenant's LLM budget is spent: the call is not a failure of the tool, it waits (below)
                Effect.catchIf(BudgetExhausted.is, (e) => {
                  spent = e
                  return Effect.fail(new LlmUnavailable({ message: e.message, attempts: [] }))
                })
              )
            }
          }).pipe(
            failOnDefect(toolId),
            Effect.mapError((e) => {
              const fields = toolFailedFields(e)
              return new ToolFailed({
                ...fields,
                message: maskSecrets(fields.message, sent),
                ...(fields.body_excerpt !== undefined
                  ? { body_excerpt: maskSecrets(fields.body_excerpt, sent) }
                  : {})
              })
            }),
            Effect.map((output): ToolResult => ({ output: maskValuesDeep(output, sent), cached: false }))
          )
          const sideEffect = tool.spec.side_effect && !tool.spec.idempotent
          const result = yield* (payload.execution_key !== undefined && sideEffect
            ? once(payload.execution_key, tool.spec, run)
            : run).pipe(
              // the headers of this execution (none when the outcome came from the ledger)
              Effect.mapError((e) =>
                spent !== undefined && ToolFailed.is(e)
                  ? spent
                  : rateHeaders !== undefined && ToolFailed.is(e)
                  ? new ToolFailed({ ...toolFailedFields(e), rate_headers: rateHeaders })
                  : e
              )
            )
          if (key) yield* cache.set(key, result.output)
          return { ...result, ...(rateHeaders ? { rate_headers: rateHeaders } : {}) }
        }),
        Describe: Effect.fn("ToolWorker.describe", { attributes, captureStackTrace: false })(() =>
          Effect.map(registry.get(tenantId, toolId), (tool) => tool.spec)
        ),
        CheckInput: Effect.fn("ToolWorker.checkInput", { attributes, captureStackTrace: false })(({ payload }) =>
          Effect.flatMap(registry.get(tenantId, toolId), (tool) => Effect.asVoid(tool.decode(payload.input)))
        ),
        // answered by `ToolWorker[tenant/_catalog]`; any entity of the tenant would give the same list
        PutTool: Effect.fn("ToolWorker.putTool", {
          attributes: { "altan.tenant_id": tenantId },
          captureStackTrace: false
        })(function*({ payload }) {
          yield* Effect.annotateCurrentSpan("altan.tool_id", payload.definition.tool_id)
          return (yield* registry.put(tenantId, payload.definition)).spec
        }),
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
        List: Effect.fn("ToolWorker.list", { attributes, captureStackTrace: false })(() =>
          Effect.map(registry.list(tenantId), (tools) => tools.map((tool) => tool.spec))
        ),
        ImportMcpServer: ({ payload }) => importMcpServer(payload),
        ListMcpServers: () => registry.listMcpServers(tenantId),
        GetMcpServer: ({ payload }) =>
          Effect.flatMap(
            registry.getMcpServer(tenantId, payload.server_id),
            Option.match({
              onNone: () => Effect.fail(new NotFound({ message: `no MCP server ${payload.server_id}` })),
              onSome: Effect.succeed
            })
          ),
        DeleteMcpServer: ({ payload }) => registry.removeMcpServer(tenantId, payload.server_id)
      })
    }),
    // a defect fails the call it happened in, never restarts the worker (which would cut off the others mid-call)
    { concurrency: "unbounded", maxIdleTime: "5 minutes", disableFatalDefects: true }
  )
}))
