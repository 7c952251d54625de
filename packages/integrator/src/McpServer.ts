import { AuditLog } from "@altan/audit/AuditLog"
import { needsApproval } from "@altan/domain/Approval"
import type { SessionId } from "@altan/domain/Ids"
import type { Principal } from "@altan/domain/Principal"
import { isTerminal, type Task, TaskRequest } from "@altan/domain/Task"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { catalogId, ToolWorker } from "@altan/domain/ToolWorker"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { Server } from "@modelcontextprotocol/sdk/server/index.js"
import type { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js"
import type { CallToolResult, Tool as McpTool } from "@modelcontextprotocol/sdk/types.js"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import { AuthConfig } from "./AuthConfig.js"
import { IntegratorConfig } from "./IntegratorConfig.js"
import { orUnavailable } from "./internal/clusterCall.js"
import { Tasks } from "./Tasks.js"
import { TenantConfig } from "./TenantConfig.js"
import { TokenVerifier } from "./TokenVerifier.js"

/**
 * The tenant's tool catalog as an MCP server (Streamable HTTP, protocol revision 2025-11-25 and the earlier ones the
 * SDK speaks), at `/mcp` on the public edge. The caller authenticates with the API's own bearer token: its tenant is
 * the token's, and so are the tools it sees and calls. A `tools/call` runs as a one-step task in the MCP session's own
 * task session (`mcp-<Mcp-Session-Id>`): recorded, audited, budgeted, approved where the tenant asks, and listed by
 * `GET /v1/tasks` like any other.
 *
 * MCP sessions live in the edge process that opened them (at most `maxSessions`, idle ones dropped after
 * `sessionIdleMs`); a request for a session this process does not hold gets 404, and the client opens a new one, as
 * the specification has it.
 */

const maxSessions = 10_000
const sessionIdleMs = 30 * 60_000

/** What the MCP server says of itself. */
const serverInfo = { name: "altan", version: "0.1.0" }

interface McpSession {
  readonly transport: WebStandardStreamableHTTPServerTransport
  readonly server: Server
  /** Who opened it: only they (the same tenant and user) may use it. */
  readonly owner: Principal
  lastUsed: number
  /** Requests being handled: a session with any is never dropped to make room. */
  inFlight: number
}

/** Sessions one user may hold at once (the oldest idle one makes room); all users together: `maxSessions`. */
const maxSessionsPerUser = 100

/** JSON-RPC error codes this server answers with (those of the specification). */
const ErrorCode = { ParseError: -32700, InvalidRequest: -32600, InvalidParams: -32602 } as const

/** The SDK's modules, loaded by the first `/mcp` request: processes that never serve one do not pay for them. */
const sdk = Effect.promise(async () => {
  const [server, transport, types] = await Promise.all([
    import("@modelcontextprotocol/sdk/server/index.js"),
    import("@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js"),
    import("@modelcontextprotocol/sdk/types.js")
  ])
  return { ...server, ...transport, ...types }
}).pipe(Effect.cached, Effect.runSync)

const bearerToken = (header: string | undefined): string =>
  header !== undefined && /^bearer /i.test(header) ? header.slice("bearer ".length).trim() : ""

/** The origin the caller reached this edge at (its `Host`, as the edge's forwarded-header middleware set it). */
const originOf = (request: HttpServerRequest.HttpServerRequest) => {
  const proto = request.headers["x-forwarded-proto"]?.split(",")[0]?.trim() === "https" ? "https" : "http"
  return `${proto}://${request.headers["host"] ?? "localhost"}`
}

/** RFC 9728 3.1: the metadata of the resource `<origin>/mcp` is at the well-known path with `/mcp` after it. */
const metadataUrl = (origin: string) => `${origin}/.well-known/oauth-protected-resource/mcp`

/** A JSON-RPC error answered by HTTP, before any MCP session handles the request. */
const rpcError = (status: number, code: number, message: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ jsonrpc: "2.0", error: { code, message }, id: null }, { status, headers })

/**
 * The MCP description of one of our tools: its JSON Schemas, and hints from what it is (`readOnlyHint` for a tool
 * without side effects, `destructiveHint` for one whose repeat is not harmless, `idempotentHint`). A tool that waits
 * for a person's approval says so in its description and in `_meta`.
 */
const toMcpTool = (spec: ToolSpec, approval: boolean): McpTool => {
  const outputSchema = spec.output_schema?.["type"] === "object" ? spec.output_schema : undefined
  return {
    name: spec.tool_id,
    title: spec.name,
    description: approval
      ? `${spec.description} (Each call waits for a person's approval before it runs.)`
      : spec.description,
    inputSchema: { type: "object", ...spec.input_schema } as McpTool["inputSchema"],
    ...(outputSchema ? { outputSchema: outputSchema as McpTool["outputSchema"] } : {}),
    annotations: {
      title: spec.name,
      readOnlyHint: !spec.side_effect,
      destructiveHint: spec.side_effect && !spec.idempotent,
      idempotentHint: spec.idempotent,
      openWorldHint: spec.provider !== "utility"
    },
    ...(approval ? { _meta: { "altan/requires_approval": true } } : {})
  }
}

/** A call's answer as MCP has it: the output as structured content and as text; a failure as `isError`. */
const resultOf = (task: Task): CallToolResult => {
  const step = task.steps[0]
  if (task.status === "succeeded") {
    const output = step?.output ?? task.output
    const structured = output !== null && typeof output === "object" && !Array.isArray(output)
      ? output as Record<string, unknown>
      : undefined
    return {
      content: [{
        type: "text",
        text: typeof output === "string" ? output : output === undefined ? "" : JSON.stringify(output)
      }],
      ...(structured ? { structuredContent: structured } : {})
    }
  }
  const error = step?.error ?? task.error
  const text = !isTerminal(task.status)
    ? task.status === "waiting"
      ? `the call waits (${
        (task.waiting_for ?? []).map((w) => w.kind).join(", ") || "for a decision"
      }): task ${task.task_id}; its result will be on GET /v1/tasks/${task.task_id}`
      : `the call is still running: task ${task.task_id}; its result will be on GET /v1/tasks/${task.task_id}`
    : `${error?.code ?? task.status}: ${error?.message ?? `the call ended ${task.status}`}`
  return { content: [{ type: "text", text }], isError: true }
}

const decodeRequest = Schema.decodeUnknown(TaskRequest)

/** `/mcp` and its protected-resource metadata, on the edge's router. */
export const McpLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    const verifier = yield* TokenVerifier
    const tasks = yield* Tasks
    const workers = yield* ToolWorker.client
    const config = yield* TenantConfig
    const auth = yield* AuthConfig
    const edgeConfig = yield* IntegratorConfig
    const audit = yield* AuditLog
    const runtime = yield* Effect.runtime<never>()
    // the SDK answers an `McpError` as that JSON-RPC error, anything else as an internal error
    const run = <A, E>(effect: Effect.Effect<A, E>) =>
      Runtime.runPromiseExit(runtime, effect).then((exit) => {
        if (Exit.isSuccess(exit)) return exit.value
        throw Cause.squash(exit.cause)
      })
    const sessions = new Map<string, McpSession>()

    /** The tenant's tools an MCP client may see and call, and whether each waits for approval. */
    const exposed = (principal: Principal) =>
      Effect.gen(function*() {
        const settings = yield* config.getSettings(principal.tenantId)
        const catalog = yield* orUnavailable(workers(catalogId(principal.tenantId)).List())
        const allowed = settings.mcp_exposed_tools
        return catalog.filter((spec) => allowed === undefined || allowed.includes(spec.tool_id)).map((spec) => ({
          spec,
          approval: spec.requires_approval === true || needsApproval(spec, settings.approval_required ?? [])
        }))
      })

    /**
     * One MCP session's server. Each of its requests runs as the principal of the HTTP request that carries it (handed
     * over as the request's `authInfo`): requests of one session with different tokens never see each other's.
     */
    const open = (
      mcp: Effect.Effect.Success<typeof sdk>,
      owner: Principal
    ): McpSession => {
      const server = new mcp.Server(serverInfo, {
        capabilities: { tools: { listChanged: false } },
        instructions: "The tools of your Altan tenant. Each call runs as a task, visible in GET /v1/tasks."
      })
      const transport: WebStandardStreamableHTTPServerTransport = new mcp.WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: true,
        maxRequestBodySize: edgeConfig.maxBodyBytes,
        onsessioninitialized: (id) => void sessions.set(id, session),
        onsessionclosed: (id) => void sessions.delete(id)
      })
      const session: McpSession = { transport, server, owner, lastUsed: Date.now(), inFlight: 0 }
      const principalOf = (extra: { readonly authInfo?: { readonly extra?: Record<string, unknown> } }) =>
        (extra.authInfo?.extra?.["principal"] as Principal | undefined) ?? owner
      server.setRequestHandler(mcp.ListToolsRequestSchema, (_request, extra) => {
        const principal = principalOf(extra)
        return run(
          Effect.map(exposed(principal), (tools) => ({
            tools: tools.map(({ approval, spec }) => toMcpTool(spec, approval))
          })).pipe(Effect.withSpan("Mcp.listTools", { attributes: { "altan.tenant_id": principal.tenantId } }))
        )
      })
      server.setRequestHandler(mcp.CallToolRequestSchema, (request, extra) => {
        const principal = principalOf(extra)
        return run(
          call(mcp, principal, transport.sessionId!, request.params.name, request.params.arguments ?? {}).pipe(
            Effect.withSpan("Mcp.callTool", {
              attributes: { "altan.tenant_id": principal.tenantId, "altan.tool_id": request.params.name }
            })
          )
        )
      })
      return session
    }

    /** Makes room for a session of `owner`: idle ones first; never one with a request in flight. */
    const makeRoom = (owner: Principal, now: number) =>
      Effect.gen(function*() {
        const own = [...sessions].filter(([, s]) =>
          s.owner.tenantId === owner.tenantId && s.owner.userId === owner.userId
        )
        const drop = (id: string, s: McpSession) =>
          Effect.zipRight(Effect.sync(() => sessions.delete(id)), Effect.promise(() => s.transport.close()))
        for (const [id, s] of sessions) {
          if (s.inFlight === 0 && now - s.lastUsed > sessionIdleMs) yield* drop(id, s)
        }
        // one user's sessions make room among themselves (oldest first), so no one can push out everyone else's
        let count = own.filter(([id]) => sessions.has(id)).length
        for (const [id, s] of own) {
          if (count < maxSessionsPerUser) break
          if (s.inFlight === 0 && sessions.has(id)) {
            yield* drop(id, s)
            count--
          }
        }
        if (count >= maxSessionsPerUser) return false
        for (const [id, s] of sessions) {
          if (sessions.size < maxSessions) break
          if (s.inFlight === 0) yield* drop(id, s)
        }
        return sessions.size < maxSessions
      })

    /** `tools/call`: a one-step task in the MCP session's task session, answered once it ended (or waits). */
    const call = (
      mcp: Effect.Effect.Success<typeof sdk>,
      principal: Principal,
      mcpSessionId: string,
      name: string,
      args: unknown
    ) =>
      Effect.gen(function*() {
        const tool = (yield* exposed(principal)).find((t) => t.spec.tool_id === name)
        if (tool === undefined) {
          return yield* Effect.fail(new mcp.McpError(ErrorCode.InvalidParams, `unknown tool: ${name}`))
        }
        const request = yield* decodeRequest({
          session_id: `mcp-${mcpSessionId}` as SessionId,
          input: { steps: [{ id: "call", tool: name, input: args }] },
          tools: [name]
        }).pipe(Effect.mapError((e) => new mcp.McpError(ErrorCode.InvalidParams, e.message)))
        const submitted = yield* Effect.either(tasks.submit(principal, request))
        if (Either.isRight(submitted)) return resultOf(submitted.right)
        const e = submitted.left
        // arguments the tool's schema refuses: a tool error naming the field, so the model can correct them (the
        // 2025-11-25 revision's rule for input validation)
        if (e._tag === "InvalidRequest" && e.code === "invalid_tool_input") {
          const field = typeof e.details?.["field"] === "string"
            ? String(e.details["field"]).replace(/^input\.steps\.0\.input\.?/, "")
            : ""
          return {
            content: [{
              type: "text" as const,
              text: `invalid arguments for ${name}${field ? ` (${field})` : ""}: ${e.message}`
            }],
            isError: true
          } satisfies CallToolResult
        }
        return {
          content: [{ type: "text" as const, text: `${e.code}: ${e.message}` }],
          isError: true
        } satisfies CallToolResult
      })

    /** Every request to `/mcp`: the bearer token first, then the session it names (or a new one to initialize). */
    const handle = Effect.gen(function*() {
      const mcp = yield* sdk
      const request = yield* HttpServerRequest.HttpServerRequest
      const origin = originOf(request)
      const token = bearerToken(request.headers["authorization"])
      const verified = yield* Effect.either(verifier.verify(token))
      if (Either.isLeft(verified)) {
        // no token at all is how an MCP client finds where to log in, not an attempt worth an audit record
        if (token !== "") {
          yield* audit.record({
            tenant_id: "-",
            action: "auth.failure",
            target: `${request.method} /mcp`,
            outcome: "denied",
            details: { reason: verified.left.message }
          })
        }
        return yield* Effect.succeed(
          rpcError(401, -32001, `authentication required: ${verified.left.message}`, {
            "www-authenticate": `Bearer resource_metadata="${metadataUrl(origin)}"${
              token === "" ? "" : `, error="invalid_token"`
            }`
          })
        )
      }
      const principal = verified.right
      const now = Date.now()
      const sessionId = request.headers["mcp-session-id"]
      let session: McpSession
      if (sessionId !== undefined) {
        const found = sessions.get(sessionId)
        // a session is its opener's: another tenant or user gets the same answer as for a session never opened
        if (
          found === undefined || found.owner.tenantId !== principal.tenantId ||
          found.owner.userId !== principal.userId
        ) {
          return rpcError(404, -32001, "session not found: initialize a new one")
        }
        session = found
      } else if (request.method === "POST") {
        if (!(yield* makeRoom(principal, now))) {
          return rpcError(429, ErrorCode.InvalidRequest, "too many open MCP sessions: close one (DELETE /mcp) first")
        }
        session = open(mcp, principal)
        yield* Effect.promise(() => session.server.connect(session.transport))
      } else {
        return rpcError(400, ErrorCode.InvalidRequest, "no Mcp-Session-Id: initialize a session with a POST first")
      }
      session.lastUsed = now
      if (sessionId !== undefined) {
        // most recently used last, so the idle sweep above meets the oldest first
        sessions.delete(sessionId)
        sessions.set(sessionId, session)
      }
      const body = request.method === "POST" ? yield* request.text : undefined
      const current = session
      const response = yield* Effect.acquireUseRelease(
        Effect.sync(() => void current.inFlight++),
        () =>
          Effect.promise(() =>
            current.transport.handleRequest(
              new Request(`${origin}${request.url}`, {
                method: request.method,
                headers: request.headers as Record<string, string>,
                ...(body !== undefined ? { body } : {})
              }),
              // this request's caller, for the handlers (the session's requests may come with different tokens)
              { authInfo: { token: "", clientId: principal.userId, scopes: [], extra: { principal } } }
            )
          ),
        () => Effect.sync(() => void current.inFlight--)
      )
      return HttpServerResponse.fromWeb(response)
    }).pipe(
      Effect.catchTag("RequestError", () => Effect.succeed(rpcError(400, ErrorCode.ParseError, "unreadable body"))),
      Effect.withSpan("Mcp.request")
    )

    /**
     * RFC 9728: which authorization server issues the tokens `/mcp` takes, so MCP clients know where to log in. The
     * metadata of the resource `<origin>/mcp` is at the well-known path with `/mcp` after it (the challenge names that
     * one); at the root, the same for the whole origin.
     */
    const metadata = (resourcePath: string) =>
      Effect.gen(function*() {
        const origin = originOf(yield* HttpServerRequest.HttpServerRequest)
        return HttpServerResponse.unsafeJson({
          resource: `${origin}${resourcePath}`,
          authorization_servers: [auth.issuer],
          scopes_supported: edgeConfig.mcpScopes,
          bearer_methods_supported: ["header"],
          resource_name: "Altan agent runtime (MCP)",
          resource_documentation: `${origin}/docs`
        }, { headers: { vary: "host, x-forwarded-host, x-forwarded-proto" } })
      })

    yield* router.post("/mcp", handle)
    yield* router.get("/mcp", handle)
    yield* router.del("/mcp", handle)
    yield* router.get("/.well-known/oauth-protected-resource", metadata(""))
    yield* router.get("/.well-known/oauth-protected-resource/mcp", metadata("/mcp"))
    yield* Effect.addFinalizer(() =>
      Effect.forEach(sessions.values(), (s) => Effect.promise(() => s.transport.close()), { discard: true })
    )
  })
)
