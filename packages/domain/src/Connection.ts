import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Schema from "effect/Schema"
import { BudgetName } from "./Budget.js"
import { ConnectionInfo } from "./ConnectionConfig.js"
import { BudgetExhausted, ConnectionRequired } from "./ConnectionErrors.js"
import { InvalidRequest, NotFound, Unavailable, UpstreamFailed } from "./Errors.js"
import { entityId, type TenantId } from "./Ids.js"
import { ChatMessage, Completion, FunctionTool, LlmError } from "./Llm.js"
import { McpServer, McpServerConfig, McpServerId } from "./McpServers.js"
import { payload } from "./RpcPayload.js"
import { ToolError, ToolResult } from "./ToolWorker.js"

/** What only a connection fails a tool call with (its grant, its breaker, its budget): part of `ToolError`. */
export { BudgetExhausted, ConnectionRequired, RateLimited, UpstreamUnavailable } from "./ConnectionErrors.js"

/** `Connection.Invoke`: one tool call as the agent asked for it. */
export const InvokePayload = payload({
  tool_id: Schema.String,
  input: Schema.Unknown,
  task_id: Schema.optional(Schema.String),
  step_id: Schema.optional(Schema.String),
  /**
   * The step's attempt (from 1). Every execution of a call with side effects is keyed by task, step, tool,
   * attempt and the connection's own try, and the tool service runs each key at most once: a repeated
   * `Invoke` of the same attempt (a redelivery, a resumed task) gets the first one's outcome.
   */
  attempt: Schema.optional(Schema.Int),
  /**
   * Asked again for an attempt that may have run before (a resumed task, a call that broke): its tries are
   * answered from the tool service's ledger where they ran, without charging the breaker or the budget again.
   */
  resume: Schema.optional(Schema.Boolean),
  /** The task's LLM chain, for tools that generate text; the tenant's default chain otherwise. */
  llms: Schema.optional(Schema.Array(Schema.String)),
  /** The tool's fallback (its spec's `fallback`), tried when the call fails transiently. */
  fallback: Schema.optional(Schema.String),
  /** The task's tool allowlist, which a fallback must respect too. */
  allowed_tools: Schema.optional(Schema.Array(Schema.String)),
  /** Tools already tried for this call, so a cycle of fallbacks ends. */
  tried: Schema.optional(Schema.Array(Schema.String)),
  /** What the tool's spec says about retrying it. */
  policy: Schema.optional(Schema.Struct({
    idempotent: Schema.Boolean,
    idempotency_key: Schema.Boolean,
    max_attempts: Schema.optional(Schema.Int)
  })),
  /** `sync` calls go before `async` ones when the provider's budget is short. */
  priority: Schema.optional(Schema.Literal("sync", "async")),
  /** Epoch ms after which the caller no longer waits (a sync task's timeout). */
  deadline: Schema.optional(Schema.Number),
  /**
   * Where an OAuth2 consent returns (the edge's callback, as the task's caller reached it): a call failing with
   * `ConnectionRequired` then carries a fresh `authorize_url` when the provider's OAuth2 app is configured.
   */
  redirect_uri: Schema.optional(Schema.String)
})
export type InvokePayload = typeof InvokePayload.Type

/** `Connection.Complete`: one LLM turn, and the LLMs to try after this one. */
export const CompletePayload = payload({
  messages: Schema.Array(ChatMessage),
  tools: Schema.Array(FunctionTool),
  fallbacks: Schema.Array(Schema.String),
  task_id: Schema.optional(Schema.String)
})
export type CompletePayload = typeof CompletePayload.Type

/**
 * A tenant's relationship with one upstream provider (credentials, budget, retries).
 * Entity id: `tenantId/provider`.
 */
export const Connection = Entity.make("Connection", [
  Rpc.make("Invoke", {
    payload: InvokePayload,
    success: ToolResult,
    error: ToolError
  }),
  /**
   * One LLM turn, sent to `Connection[tenant/llm:<llm_id>]`. On persistent failure the connection
   * hands the turn to the next of `fallbacks`, in order.
   */
  Rpc.make("Complete", {
    payload: CompletePayload,
    success: Completion,
    /**
     * `Unavailable`: a store the call needs cannot be reached right now; asking again later is safe. `BudgetExhausted`:
     * the tenant's LLM budget is used up for its period; nothing was asked.
     */
    error: Schema.Union(LlmError, Unavailable, BudgetExhausted)
  }),
  /**
   * The end of an OAuth2 authorization: exchanges the code (with its PKCE verifier) at the tenant's
   * token endpoint and keeps the tokens in the vault. Sent by the edge's callback.
   */
  Rpc.make("CompleteAuthorization", {
    payload: { code: Schema.String, code_verifier: Schema.String, redirect_uri: Schema.String },
    success: ConnectionInfo,
    error: Schema.Union(NotFound, UpstreamFailed, Unavailable)
  }),
  /**
   * Whether a call could get this connection's credential now (an API key whose secret is stored, OAuth2 tokens that
   * are valid or refresh): a call waiting for its connection asks before it calls again.
   */
  Rpc.make("Ready", {
    success: Schema.Boolean,
    error: Unavailable
  }),
  /**
   * Whether the tenant's `budgets` (of those named) allow a call now: `BudgetExhausted` when one is used up. A call
   * waiting for a budget asks before it calls again.
   */
  Rpc.make("Admit", {
    payload: { budgets: Schema.Array(BudgetName) },
    error: Schema.Union(BudgetExhausted, Unavailable)
  }),
  /**
   * Imports a remote MCP server's tools with this connection's credential (an OAuth2 access token refreshed here, once,
   * when it expired or the server refused it): sent to the server's connection on `PUT`, on refresh, and by this
   * connection itself when an authorization completes. `ConnectionRequired`: no grant yet, it was lost, or an `auth:
   * oauth2` server has no oauth2 connection. `InvalidRequest`: the connection's tokens are for another resource than
   * the server's URL (nothing is sent).
   */
  Rpc.make("ImportMcpServer", {
    payload: { server_id: McpServerId, config: McpServerConfig },
    success: McpServer,
    error: Schema.Union(InvalidRequest, UpstreamFailed, Unavailable, ConnectionRequired)
  }),
  /**
   * Makes this the oauth2 connection of an OAuth-protected MCP server (`auth: oauth2`): the server's authorization server
   * discovered, a client registered there (or the one given), its secret kept in the vault; an earlier grant of this
   * connection is revoked first (best effort: its tokens are forgotten even when the revocation fails). The set-up
   * has one deadline (20 s), past which it fails having changed nothing. Answers the authorization server's URL.
   */
  Rpc.make("SetUpMcpAuthorization", {
    payload: {
      server_id: McpServerId,
      config: McpServerConfig,
      /** Where the consent returns (the edge's callback), registered with the client. */
      redirect_uri: Schema.String
    },
    success: Schema.Struct({ authorization_server: Schema.String, registered: Schema.Boolean }),
    error: Schema.Union(InvalidRequest, UpstreamFailed, Unavailable)
  }),
  /**
   * Revokes the tokens at the provider (RFC 7009), best effort (a failed or slow revocation is logged, never fails
   * this), then forgets them and the connection.
   */
  Rpc.make("Disconnect", {
    success: Schema.Boolean,
    error: Schema.Union(UpstreamFailed, Unavailable)
  })
]).annotate(ClusterSchema.ShardGroup, () => "integrator")

/** The provider name of an LLM's connection. */
export const llmProvider = (llmId: string) => `llm:${llmId}`

/** The entity id of a tenant's connection to `provider`. */
export const connectionId = (tenantId: TenantId, provider: string) => entityId(tenantId, provider)

/** The entity id of a tenant's connection to its LLM `llmId` (`llm:<id>`). */
export const llmConnectionId = (tenantId: TenantId, llmId: string) => entityId(tenantId, llmProvider(llmId))
