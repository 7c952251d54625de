import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import * as JSONSchema from "effect/JSONSchema"
import * as Schema from "effect/Schema"
import { ApprovalPage, ApprovalQuery, ApproveRequest, RejectRequest } from "./Approval.js"
import { UsageReport } from "./Budget.js"
import { AuthorizeResponse, ConnectionConfig, ConnectionInfo, ProviderName } from "./ConnectionConfig.js"
import {
  ConflictHttp,
  ForbiddenHttp,
  InvalidRequestHttp,
  NotFoundHttp,
  PayloadTooLargeHttp,
  TooManyRequestsHttp,
  UnauthorizedHttp,
  UnavailableHttp,
  UpstreamFailedHttp
} from "./Errors.js"
import { SessionId, TaskId, ToolId } from "./Ids.js"
import { LlmConfig, LlmId } from "./LlmConfig.js"
import { McpServer, McpServerConfig, McpServerId } from "./McpServers.js"
import { CurrentPrincipal } from "./Principal.js"
import { SecretName } from "./Secret.js"
import { Settings } from "./Settings.js"
import { SessionInfo, Task, TaskEvent, TaskPage, TaskQuery, TaskRequest } from "./Task.js"
import { ToolDefinition, ToolSpec } from "./ToolDefinition.js"
import { ToolView } from "./ToolWorker.js"

/**
 * The task's event stream as the document has it: `text/event-stream` whose every `data:` is a `TaskEvent` (named among
 * the components, with what it refers to), not an opaque string.
 */
const withEventSchema = (spec: Record<string, any>): Record<string, any> => {
  const definitions: Record<string, JSONSchema.JsonSchema7> = {}
  const event = JSONSchema.fromAST(TaskEvent.ast, {
    definitions,
    definitionPath: "#/components/schemas/",
    target: "openApi3.1"
  })
  const stream = spec.paths?.["/v1/tasks/{task_id}/events"]?.get?.responses?.["200"]
  if (stream !== undefined) {
    stream.description = "Server-sent events: `id`, `event` (the type) and `data`, a TaskEvent as JSON"
    stream.content = {
      "text/event-stream": {
        schema: { type: "string", description: "`id: <event id>`, `event: <type>`, `data: <TaskEvent JSON>` blocks" },
        // OpenAPI 3.2 calls it `itemSchema`; the document is 3.1, where it is an extension
        "x-event-schema": event
      }
    }
  }
  spec.components = { ...spec.components, schemas: { ...definitions, ...spec.components?.schemas } }
  return spec
}

/**
 * The 400s as the API answers them: the edge turns the framework's decode failures into `InvalidRequest` (see the
 * integrator's `errorEnvelope`), so its `HttpApiDecodeError` body is never sent and leaves the document; every error
 * answer is then the envelope around `Error`.
 */
const withApiErrors = (spec: Record<string, any>): Record<string, any> => {
  const decodeError = "#/components/schemas/HttpApiDecodeError"
  for (const item of Object.values<Record<string, any>>(spec.paths ?? {})) {
    for (const operation of Object.values<Record<string, any>>(item)) {
      for (const response of Object.values<Record<string, any>>(operation?.responses ?? {})) {
        const content = response?.content?.["application/json"]
        const anyOf: Array<{ $ref?: string }> | undefined = content?.schema?.anyOf
        if (anyOf === undefined || !anyOf.some((s) => s.$ref === decodeError)) continue
        const rest = anyOf.filter((s) => s.$ref !== decodeError)
        content.schema = rest.length === 1 ? rest[0] : { anyOf: rest }
      }
    }
  }
  const schemas = spec.components?.schemas
  if (schemas) {
    delete schemas["HttpApiDecodeError"]
    // the schemas only it referred to
    for (const name of ["Issue", "PropertyKey"]) {
      if (!JSON.stringify(spec).includes(`"#/components/schemas/${name}"`)) delete schemas[name]
    }
  }
  return spec
}

/** Verifies `Authorization: Bearer <JWT>` and provides the caller's `Principal`. */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("Authentication", {
  failure: UnauthorizedHttp,
  provides: CurrentPrincipal,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

const taskId = HttpApiSchema.param("task_id", TaskId)
const stepId = HttpApiSchema.param("step_id", Schema.String)
const sessionId = HttpApiSchema.param("session_id", SessionId)

/** Tasks: submit, read, cancel. Any role; always scoped to the token's tenant. */
export class TasksGroup extends HttpApiGroup.make("tasks")
  .add(
    HttpApiEndpoint.post("create", "/v1/tasks").annotate(OpenApi.Summary, "Submit a task")
      .setPayload(TaskRequest)
      .addSuccess(Task)
      .addSuccess(Task, { status: 202 })
      .annotate(OpenApi.Description, "Submit a task. 200 with the finished task (sync); 202 while it runs.")
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/tasks").annotate(OpenApi.Summary, "List the tenant's tasks")
      .setUrlParams(TaskQuery)
      .addSuccess(TaskPage)
      .addError(InvalidRequestHttp)
      .annotate(
        OpenApi.Description,
        "The tenant's tasks, newest first, optionally of one `session_id` or `status`; at most `limit` (default " +
          "20, at most 100) a page, and `next_cursor` while there may be more. A summary per task: " +
          "GET /v1/tasks/{task_id} for the whole."
      )
  )
  .add(HttpApiEndpoint.get("get")`/v1/tasks/${taskId}`.annotate(OpenApi.Summary, "Read a task").addSuccess(Task))
  .add(
    HttpApiEndpoint.post("cancel")`/v1/tasks/${taskId}/cancel`.annotate(OpenApi.Summary, "Cancel a task").addSuccess(
      Task
    )
  )
  .add(
    HttpApiEndpoint.get("events")`/v1/tasks/${taskId}/events`.annotate(OpenApi.Summary, "Follow a task's events (SSE)")
      .setHeaders(Schema.Struct({ "last-event-id": Schema.optional(Schema.String) }))
      .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }))
      .annotate(
        OpenApi.Description,
        "Server-sent events of the task; every event has an id, a reconnect with Last-Event-ID resumes after it, " +
          "and the stream ends after the terminal event."
      )
  )
  .add(
    HttpApiEndpoint.post("approve")`/v1/tasks/${taskId}/steps/${stepId}/approve`.annotate(
      OpenApi.Summary,
      "Approve a waiting call"
    )
      .setPayload(ApproveRequest)
      .addSuccess(Task)
      .annotate(
        OpenApi.Description,
        "Approve a call waiting for approval (step `waiting_approval`): `input_hash` must be the call's (409 " +
          "otherwise); an edited `input` runs instead, once checked against the tool's schema. The call runs once " +
          "and the task goes on. An admin or the task's submitter only (403)."
      )
  )
  .add(
    HttpApiEndpoint.post("reject")`/v1/tasks/${taskId}/steps/${stepId}/reject`.annotate(
      OpenApi.Summary,
      "Reject a waiting call"
    )
      .setPayload(RejectRequest)
      .addSuccess(Task)
      .annotate(
        OpenApi.Description,
        "Reject a call waiting for approval: the step is `rejected`; a plan's task fails (`approval_rejected`), " +
          "the model of a natural-language task is told why and goes on. An admin or the task's submitter only (403)."
      )
  )
  .addError(NotFoundHttp)
  .addError(ConflictHttp)
  .addError(ForbiddenHttp)
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "Tasks: submit a structured plan or a natural-language task, read and list them, follow their events, cancel them, and decide calls waiting for approval. Any role; always the token's tenant."
  )
{}

/** The tenant's calls waiting for approval: all of them for an admin, a member's own tasks' for a member. */
export class ApprovalsGroup extends HttpApiGroup.make("approvals")
  .add(
    HttpApiEndpoint.get("list", "/v1/approvals").annotate(OpenApi.Summary, "List the calls waiting for approval")
      .setUrlParams(ApprovalQuery)
      .addSuccess(ApprovalPage)
      .annotate(
        OpenApi.Description,
        "Calls waiting for approval (`status=pending`), oldest request first; `cursor` is the previous page's " +
          "`next_cursor`."
      )
  )
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "Calls waiting for a person's approval: all of the tenant's for an admin, a member's own tasks' for a member."
  )
{}

/** Sessions: the context tasks share. */
export class SessionsGroup extends HttpApiGroup.make("sessions")
  .add(
    HttpApiEndpoint.get("get")`/v1/sessions/${sessionId}`.annotate(OpenApi.Summary, "Read a session").addSuccess(
      SessionInfo
    )
  )
  .add(
    HttpApiEndpoint.del("reset")`/v1/sessions/${sessionId}`.annotate(OpenApi.Summary, "Forget a session's conversation")
      .addSuccess(HttpApiSchema.NoContent)
  )
  .addError(NotFoundHttp)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Sessions: the context a session's tasks share (its conversation), and forgetting it.")
{}

const llmId = HttpApiSchema.param("llm_id", LlmId)
const secretName = HttpApiSchema.param("name", SecretName)

/** Tenant LLMs, as the seed writes them. Admin only. */
export class LlmsGroup extends HttpApiGroup.make("llms")
  .add(
    HttpApiEndpoint.put("put")`/v1/llms/${llmId}`.annotate(OpenApi.Summary, "Configure an LLM").setPayload(LlmConfig)
      .addSuccess(LlmConfig)
  )
  .add(
    HttpApiEndpoint.get("get")`/v1/llms/${llmId}`.annotate(OpenApi.Summary, "Read an LLM's configuration").addSuccess(
      LlmConfig
    )
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/llms").annotate(OpenApi.Summary, "List the tenant's LLMs").addSuccess(
      Schema.Array(LlmConfig)
    )
  )
  .add(
    HttpApiEndpoint.del("delete")`/v1/llms/${llmId}`.annotate(OpenApi.Summary, "Remove an LLM").addSuccess(
      HttpApiSchema.NoContent
    )
  )
  .addError(NotFoundHttp)
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "The tenant's LLMs (OpenAI-compatible endpoints), their keys named by secret. Admin only."
  )
{}

/** Tenant settings: default and fallback LLMs, egress allowlist, provider base URLs. Admin only. */
export class SettingsGroup extends HttpApiGroup.make("settings")
  .add(
    HttpApiEndpoint.put("put", "/v1/settings").annotate(OpenApi.Summary, "Write the tenant's settings").setPayload(
      Settings
    ).addSuccess(Settings)
  )
  .add(
    HttpApiEndpoint.get("get", "/v1/settings").annotate(OpenApi.Summary, "Read the tenant's settings").addSuccess(
      Settings
    )
  )
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "The tenant's settings: default LLMs, egress allowlist, provider base URLs, approvals, connection timeout, budgets, MCP exposure. Admin only."
  )
{}

/** The tenant's spend this UTC day and this month, per budget (settings `budgets`). Any role. */
export class UsageGroup extends HttpApiGroup.make("usage")
  .add(
    HttpApiEndpoint.get("get", "/v1/usage").annotate(OpenApi.Summary, "Read the tenant's spend per budget").addSuccess(
      UsageReport
    )
  )
  .middleware(Authentication)
  .annotate(OpenApi.Description, "The tenant's spend this UTC day and month, per budget. Any role.")
{}

/** Write-only secrets, referred to by name from LLM configs and connections. Admin only. */
export class SecretsGroup extends HttpApiGroup.make("secrets")
  .add(
    HttpApiEndpoint.put("put")`/v1/secrets/${secretName}`.annotate(OpenApi.Summary, "Store a secret")
      .setPayload(Schema.Struct({ value: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(16_384)) }))
      .addSuccess(HttpApiSchema.NoContent)
  )
  .add(
    HttpApiEndpoint.del("delete")`/v1/secrets/${secretName}`.annotate(OpenApi.Summary, "Delete a secret").addSuccess(
      HttpApiSchema.NoContent
    )
  )
  .addError(NotFoundHttp)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Write-only secrets, referred to by name from LLMs and connections. Admin only.")
{}

const toolId = HttpApiSchema.param("tool_id", ToolId)
const provider = HttpApiSchema.param("provider", ProviderName)

/** Built-in and the tenant's own tools. Any role reads; admins write. */
export class ToolsGroup extends HttpApiGroup.make("tools")
  .add(
    HttpApiEndpoint.put("put")`/v1/tools/${toolId}`.annotate(OpenApi.Summary, "Define a custom HTTP tool").setPayload(
      ToolDefinition
    ).addSuccess(ToolSpec)
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/tools").annotate(OpenApi.Summary, "List the tenant's tools").addSuccess(
      Schema.Array(ToolSpec)
    )
  )
  .add(HttpApiEndpoint.get("get")`/v1/tools/${toolId}`.annotate(OpenApi.Summary, "Read a tool").addSuccess(ToolView))
  .add(
    HttpApiEndpoint.del("delete")`/v1/tools/${toolId}`.annotate(OpenApi.Summary, "Remove a custom tool").addSuccess(
      HttpApiSchema.NoContent
    )
  )
  .addError(NotFoundHttp)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Built-in tools and the tenant's custom HTTP tools. Any role reads; admins write.")
{}

/** The tenant's connections to providers (API keys and tokens). Admin only. */
export class ConnectionsGroup extends HttpApiGroup.make("connections")
  .add(
    HttpApiEndpoint.put("put")`/v1/connections/${provider}`.annotate(
      OpenApi.Summary,
      "Configure a connection to a provider"
    ).setPayload(ConnectionConfig).addSuccess(ConnectionInfo)
  )
  .add(
    HttpApiEndpoint.post("authorize")`/v1/connections/${provider}/authorize`.annotate(
      OpenApi.Summary,
      "Start an OAuth2 authorization"
    ).addSuccess(AuthorizeResponse).addError(
      ConflictHttp
    )
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/connections").annotate(OpenApi.Summary, "List the tenant's connections")
      .addSuccess(Schema.Array(ConnectionInfo))
  )
  .add(
    HttpApiEndpoint.del("delete")`/v1/connections/${provider}`.annotate(
      OpenApi.Summary,
      "Remove a connection (revoking its tokens)"
    ).addSuccess(HttpApiSchema.NoContent)
  )
  .addError(NotFoundHttp)
  .addError(UpstreamFailedHttp)
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "The tenant's connections to providers (API keys, OAuth2 apps) and the start of an OAuth2 authorization. Admin only."
  )
{}

/**
 * The provider sends the tenant's user back here after consent. Unauthenticated: the single-use
 * `state` (bound to tenant and provider, 10 minutes) is the only proof.
 */
export class OAuthGroup extends HttpApiGroup.make("oauth")
  .add(
    HttpApiEndpoint.get("callback", "/v1/oauth/callback").annotate(OpenApi.Summary, "OAuth2 callback")
      .setUrlParams(Schema.Struct({
        state: Schema.String.pipe(Schema.maxLength(512)),
        code: Schema.optional(Schema.String.pipe(Schema.maxLength(4096))),
        error: Schema.optional(Schema.String.pipe(Schema.maxLength(256))),
        error_description: Schema.optional(Schema.String.pipe(Schema.maxLength(1024)))
      }))
      .addSuccess(ConnectionInfo)
  )
  .addError(NotFoundHttp)
  .addError(UpstreamFailedHttp)
  .annotate(
    OpenApi.Description,
    "Where a provider sends the user back after an OAuth2 consent; the single-use state is the only credential."
  )
{}

export const Health = Schema.Struct({ status: Schema.Literal("ok") })
export const Readiness = Schema.Struct({
  status: Schema.Literal("ok"),
  checks: Schema.Record({ key: Schema.String, value: Schema.String })
})

const serverId = HttpApiSchema.param("server_id", McpServerId)

/** The tenant's remote MCP servers, whose tools become its tools `mcp.<server_id>.<name>`. Admin only. */
export class McpServersGroup extends HttpApiGroup.make("mcp")
  .add(
    HttpApiEndpoint.put("put")`/v1/mcp/servers/${serverId}`.annotate(OpenApi.Summary, "Add or replace an MCP server")
      .setPayload(McpServerConfig)
      .addSuccess(McpServer)
      .annotate(
        OpenApi.Description,
        "Lists the server's tools now (through the egress guard: its host must be in the tenant's egress_allowlist) " +
          "and imports them as mcp.<server_id>.<name>; 502 when the server cannot be reached or lists none. With " +
          "auth oauth2: the server's authorization server is discovered and a client registered (or client_id used); " +
          "until the tenant's user consents, the answer is status needs_authorization with an authorize_url, and " +
          "the OAuth callback imports the tools."
      )
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/mcp/servers").annotate(OpenApi.Summary, "List the tenant's MCP servers")
      .addSuccess(Schema.Array(McpServer))
  )
  .add(
    HttpApiEndpoint.get("get")`/v1/mcp/servers/${serverId}`.annotate(OpenApi.Summary, "Read an MCP server")
      .addSuccess(McpServer)
  )
  .add(
    HttpApiEndpoint.del("delete")`/v1/mcp/servers/${serverId}`.annotate(OpenApi.Summary, "Remove an MCP server")
      .addSuccess(HttpApiSchema.NoContent)
  )
  .add(
    HttpApiEndpoint.post("refresh")`/v1/mcp/servers/${serverId}/refresh`.annotate(
      OpenApi.Summary,
      "Import an MCP server's tools again"
    ).addSuccess(McpServer)
  )
  .addError(NotFoundHttp)
  .addError(UpstreamFailedHttp)
  .middleware(Authentication)
  .annotate(
    OpenApi.Description,
    "The tenant's remote MCP servers: their tools become the tenant's tools mcp.<server_id>.<name>, called through " +
      "the tenant's connection like any tool. Admin only."
  )
{}

/** Probes for Kubernetes; no authentication. */
export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("healthz", "/healthz").annotate(OpenApi.Summary, "Liveness").addSuccess(Health))
  .add(HttpApiEndpoint.get("readyz", "/readyz").annotate(OpenApi.Summary, "Readiness").addSuccess(Readiness))
  .annotate(OpenApi.Description, "Probes for Kubernetes; no authentication.")
{}

/** The public HTTP API of ../shared/API.md, served by the integrator. */
export class Api extends HttpApi.make("altan")
  .add(TasksGroup)
  .add(ApprovalsGroup)
  .add(SessionsGroup)
  .add(LlmsGroup)
  .add(SettingsGroup)
  .add(UsageGroup)
  .add(SecretsGroup)
  .add(ToolsGroup)
  .add(ConnectionsGroup)
  .add(McpServersGroup)
  .add(OAuthGroup)
  .add(HealthGroup)
  .addError(InvalidRequestHttp)
  .addError(ForbiddenHttp)
  .addError(PayloadTooLargeHttp)
  .addError(UnavailableHttp)
  .addError(TooManyRequestsHttp)
  .annotate(OpenApi.Title, "Altan agent runtime")
  .annotate(OpenApi.Version, "0.1.0")
  .annotate(
    OpenApi.Description,
    "A multi-tenant runtime for AI agents that act in third-party applications with each tenant's own credentials. " +
      "Every route but the probes and the OAuth2 callback takes `Authorization: Bearer <JWT>`; the tenant is the " +
      "token's. Errors are `{\"error\": {\"code\", \"message\", \"details\"?}}` (the `Error` schema lists the codes)."
  )
  .annotate(OpenApi.License, { name: "Proprietary" })
  .annotate(OpenApi.Servers, [{ url: "/", description: "The edge serving this document" }])
  .annotate(OpenApi.Transform, (spec) => withEventSchema(withApiErrors(spec)))
{}
