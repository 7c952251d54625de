import { EgressDenied, type EgressFailed, type EgressResponse } from "@altan/domain/Egress"
import { type McpImportedTool, mcpProviderOf, type McpServer, mcpToolId } from "@altan/domain/McpServers"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { type Credential, ToolFailed } from "@altan/domain/ToolWorker"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js"
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import { createHash } from "node:crypto"
import { compileInputSchema, jsonSchemaDecoder } from "./CustomTool.js"
import { httpFailed, type Tool, type ToolHttpRequest } from "./Tool.js"

/** What this runtime says of itself to the MCP servers it calls. */
const clientInfo = { name: "altan", version: "0.1.0" }

/** The guarded HTTP client a call (or an import) may use: the tenant's allowlist, bounded in time and size. */
type Guarded = (request: ToolHttpRequest) => Effect.Effect<EgressResponse, EgressDenied | EgressFailed>

/**
 * A `fetch` for the MCP SDK's client that goes through the egress guard, so a server is reached only where the tenant
 * may reach. The guard reads whole answers: the standalone server-to-client stream (`GET`) is declined (405, which the
 * specification allows), so a call is one request and its answer. The last refusal of the guard is kept, so a failure
 * says what the guard said rather than what the SDK made of it.
 */
const guardedFetch = (
  request: Guarded,
  runtime: Runtime.Runtime<never>,
  refused: { last?: EgressDenied | EgressFailed }
): FetchLike =>
async (url, init) => {
  const method = (init?.method ?? "GET").toUpperCase()
  if (method === "GET") return new Response(null, { status: 405, statusText: "Method Not Allowed" })
  const headers: Record<string, string> = {}
  new Headers(init?.headers).forEach((value, name) => void (headers[name] = value))
  const exit = await Runtime.runPromiseExit(
    runtime,
    request({
      url: String(url),
      method: method as ToolHttpRequest["method"],
      headers,
      ...(typeof init?.body === "string" ? { body: init.body } : {}),
      // a redirect is the SDK's to judge (it follows same-origin ones only, each through this guard again): never
      // the call's body and session sent on to another host
      followRedirects: false
    }),
    init?.signal ? { signal: init.signal } : undefined
  )
  if (Exit.isFailure(exit)) {
    const failure = Cause.squash(exit.cause)
    refused.last = failure as EgressDenied | EgressFailed
    throw failure instanceof Error ? failure : new Error(String(failure))
  }
  const answer = exit.value
  const empty = answer.status === 202 || answer.status === 204 || answer.body.byteLength === 0
  return new Response(empty ? null : answer.body, { status: answer.status, headers: answer.headers })
}

/**
 * MCP sessions kept per tenant, server and credential (at most `maxSessions`, the oldest forgotten first): a call goes
 * on in its server's session instead of opening one (an `initialize` and its notice) per call.
 */
const sessions = new Map<
  string,
  { readonly sessionId: string; readonly protocolVersion: string | undefined; readonly since: number }
>()
const maxSessions = 10_000
/** A kept session is not used past this: servers expire idle sessions, and a fresh one costs one round trip. */
const sessionMaxAgeMs = 30 * 60_000

/** The server forgot the session (it restarted, or expired it): `404` to a request that named it. */
const sessionGone = (error: unknown) => error instanceof StreamableHTTPError && error.code === 404

/**
 * An MCP client over the guard, with the tenant's credential on every request, in the session `sessionKey` names
 * (kept from an earlier call; opened, and kept, when there is none or the server forgot it). Without a key, a session
 * of its own.
 */
const withClient = <A>(
  url: string,
  credential: Credential | undefined,
  http: Guarded,
  use: (client: Client, transport: StreamableHTTPClientTransport, signal: AbortSignal) => Promise<A>,
  sessionKey?: string
): Effect.Effect<A, { readonly refused?: EgressDenied | EgressFailed; readonly error: unknown }> =>
  Effect.flatMap(Effect.runtime<never>(), (runtime) => {
    const refused: { last?: EgressDenied | EgressFailed } = {}
    const once = async (reuse: boolean, signal: AbortSignal) => {
      const found = reuse && sessionKey !== undefined ? sessions.get(sessionKey) : undefined
      const kept = found !== undefined && Date.now() - found.since < sessionMaxAgeMs ? found : undefined
      const transport = new StreamableHTTPClientTransport(new URL(url), {
        fetch: guardedFetch(http, runtime, refused),
        requestInit: {
          headers: credential ? { [credential.header]: Redacted.value(credential.value) } : {}
        },
        ...(kept ? { sessionId: kept.sessionId } : {})
      })
      if (kept?.protocolVersion) transport.setProtocolVersion(kept.protocolVersion)
      const client = new Client(clientInfo)
      try {
        // with a kept session the client does not initialize again
        await client.connect(transport)
        if (kept === undefined && sessionKey !== undefined && transport.sessionId !== undefined) {
          sessions.delete(sessionKey)
          sessions.set(sessionKey, {
            sessionId: transport.sessionId,
            protocolVersion: transport.protocolVersion,
            since: Date.now()
          })
          if (sessions.size > maxSessions) sessions.delete(sessions.keys().next().value!)
        }
        const result = await use(client, transport, signal)
        // a session no later call will use is ended at the server
        if (sessionKey === undefined && transport.sessionId !== undefined) {
          await transport.terminateSession().catch(() => undefined)
        }
        return result
      } finally {
        // closes this client only: a kept session stays open on the server for the next call
        await client.close().catch(() => undefined)
      }
    }
    return Effect.tryPromise({
      // an interrupted call (its step timed out, its task was cancelled) stops waiting for the server
      try: async (signal) => {
        try {
          return await once(true, signal)
        } catch (error) {
          // the request named a session the server no longer has, so it did nothing: once more, in a new one
          if (sessionKey === undefined || !sessionGone(error) || !sessions.has(sessionKey)) throw error
          sessions.delete(sessionKey)
          return await once(false, signal)
        }
      },
      catch: (error) => ({ error, ...(refused.last ? { refused: refused.last } : {}) })
    })
  })

/** Whose session a call uses: the tenant's, at this server, with this credential (a new key, a new session). */
const sessionKeyOf = (tenantId: string, server: McpServer, credential: Credential | undefined) =>
  `${tenantId}\u0000${server.server_id}\u0000${server.url}\u0000${
    credential
      ? createHash("sha256").update(`${credential.header}\u0000${Redacted.value(credential.value)}`).digest("base64url")
      : ""
  }`

/** The HTTP status the MCP server answered a failed request with, if it answered. */
export const statusOf = (error: unknown): number | undefined =>
  error instanceof StreamableHTTPError && error.code !== undefined && error.code >= 400 && error.code < 600
    ? error.code
    : undefined

/** What went wrong with a request to an MCP server, its HTTP status first when it answered one. */
export const messageOf = (error: unknown) =>
  error instanceof StreamableHTTPError && error.code !== undefined
    ? `HTTP ${error.code} (${error.message})`
    : error instanceof Error
    ? error.message
    : String(error)

/**
 * Lists a remote MCP server's tools (every page), as they are imported: under their tool ids here, with their schemas
 * and hints; `only` keeps those of these names. Fails with the guard's refusal, or what went wrong.
 */
export const listTools = (
  url: string,
  credential: Credential | undefined,
  http: Guarded,
  serverId: string,
  only?: ReadonlyArray<string>
) =>
  withClient(url, credential, http, async (client, transport) => {
    const listed: Array<McpImportedTool> = []
    let cursor: string | undefined
    for (let page = 0; page < 100; page++) {
      const result = await client.listTools(cursor === undefined ? {} : { cursor })
      for (const tool of result.tools) {
        if (only !== undefined && !only.includes(tool.name)) continue
        const readOnly = tool.annotations?.readOnlyHint === true
        listed.push({
          tool_id: mcpToolId(serverId, tool.name),
          name: tool.name,
          ...(tool.title ?? tool.annotations?.title ? { title: (tool.title ?? tool.annotations?.title)! } : {}),
          description: tool.description ?? "",
          input_schema: tool.inputSchema as Record<string, unknown>,
          ...(tool.outputSchema ? { output_schema: tool.outputSchema as Record<string, unknown> } : {}),
          read_only: readOnly,
          // the specification's defaults: a tool that does not say otherwise may be destructive, and not idempotent
          destructive: !readOnly && tool.annotations?.destructiveHint !== false,
          idempotent: readOnly || tool.annotations?.idempotentHint === true
        })
      }
      cursor = result.nextCursor
      if (cursor === undefined) break
    }
    return { tools: listed, protocolVersion: transport.protocolVersion }
  })

/**
 * A tool of a tenant's remote MCP server: `tools/call` on the server, through the egress guard (the server's host is
 * reachable only if the tenant's allowlist has it) with the credential of the server's connection. `isError` answers
 * are failures with the server's text; structured content, else the text, is the output.
 */
export const fromImported = (server: McpServer, imported: McpImportedTool): Either.Either<Tool, string> =>
  Either.map(compileInputSchema(imported.input_schema), (validate) => {
    const spec: ToolSpec = {
      tool_id: imported.tool_id as ToolSpec["tool_id"],
      name: imported.title ?? imported.name,
      description: imported.description,
      provider: mcpProviderOf(server),
      builtin: false,
      input_schema: imported.input_schema,
      ...(imported.output_schema ? { output_schema: imported.output_schema } : {}),
      side_effect: !imported.read_only,
      cacheable: false,
      idempotent: imported.idempotent,
      ...(server.connection !== undefined || server.auth === "oauth2" ? { needs_connection: true } : {})
    }
    return {
      spec,
      hosts: [],
      decode: jsonSchemaDecoder(imported.tool_id, validate),
      run: (input, ctx) => {
        let changed = false
        return withClient(
          server.url,
          ctx.credential,
          ctx.http,
          async (client, _transport, signal) => {
            // the server may say, on the call's own answer stream, that its tools changed
            client.setNotificationHandler(ToolListChangedNotificationSchema, () => void (changed = true))
            return await client.callTool(
              { name: imported.name, arguments: input as Record<string, unknown> },
              undefined,
              { signal }
            )
          },
          sessionKeyOf(ctx.tenantId, server, ctx.credential)
        ).pipe(
          Effect.mapError(({ error, refused }): ToolFailed =>
            refused !== undefined
              ? httpFailed(imported.tool_id)(refused)
              : statusOf(error) === 401 || statusOf(error) === 403
              ? new ToolFailed({
                // the server refused the credential: the call did nothing; a 401 makes an OAuth2 connection refresh
                tool_id: imported.tool_id,
                message: `the MCP server ${server.server_id} refused the call: ${messageOf(error)}`,
                retryable: false,
                status: statusOf(error)!,
                not_applied: true
              })
              : new ToolFailed({
                tool_id: imported.tool_id,
                message: `the MCP server ${server.server_id} failed the call: ${messageOf(error)}`,
                retryable: true
              })
          ),
          Effect.tap(() => (changed && ctx.toolsChanged ? ctx.toolsChanged() : Effect.void)),
          Effect.flatMap((result) => {
            const text = Array.isArray(result.content)
              ? result.content.flatMap((c) => (c.type === "text" ? [c.text] : [])).join("\n")
              : ""
            if (result.isError === true) {
              return Effect.fail(
                new ToolFailed({
                  tool_id: imported.tool_id,
                  message: `${server.server_id}: ${text || "the tool reported an error"}`,
                  retryable: false
                })
              )
            }
            return Effect.succeed(result.structuredContent ?? text)
          })
        )
      }
    } satisfies Tool
  })

/** A refusal of the guard while importing, as the admin sees it. */
export const importRefusal = (refused: EgressDenied | EgressFailed): string =>
  EgressDenied.is(refused)
    ? `egress_denied: ${refused.message}`
    : `the MCP server could not be reached: ${refused.message}`
