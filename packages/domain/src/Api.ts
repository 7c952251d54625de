import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
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
import { CurrentPrincipal } from "./Principal.js"
import { SecretName } from "./Secret.js"
import { Settings } from "./Settings.js"
import { SessionInfo, Task, TaskPage, TaskQuery, TaskRequest } from "./Task.js"
import { ToolDefinition, ToolSpec } from "./ToolDefinition.js"
import { ToolView } from "./ToolWorker.js"

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
    HttpApiEndpoint.post("create", "/v1/tasks")
      .setPayload(TaskRequest)
      .addSuccess(Task)
      .addSuccess(Task, { status: 202 })
      .annotate(OpenApi.Description, "Submit a task. 200 with the finished task (sync); 202 while it runs.")
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/tasks")
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
  .add(HttpApiEndpoint.get("get")`/v1/tasks/${taskId}`.addSuccess(Task))
  .add(HttpApiEndpoint.post("cancel")`/v1/tasks/${taskId}/cancel`.addSuccess(Task))
  .add(
    HttpApiEndpoint.get("events")`/v1/tasks/${taskId}/events`
      .setHeaders(Schema.Struct({ "last-event-id": Schema.optional(Schema.String) }))
      .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }))
      .annotate(
        OpenApi.Description,
        "Server-sent events of the task; every event has an id, a reconnect with Last-Event-ID resumes after it, " +
          "and the stream ends after the terminal event."
      )
  )
  .add(
    HttpApiEndpoint.post("approve")`/v1/tasks/${taskId}/steps/${stepId}/approve`
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
    HttpApiEndpoint.post("reject")`/v1/tasks/${taskId}/steps/${stepId}/reject`
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
{}

/** The tenant's calls waiting for approval: all of them for an admin, a member's own tasks' for a member. */
export class ApprovalsGroup extends HttpApiGroup.make("approvals")
  .add(
    HttpApiEndpoint.get("list", "/v1/approvals")
      .setUrlParams(ApprovalQuery)
      .addSuccess(ApprovalPage)
      .annotate(
        OpenApi.Description,
        "Calls waiting for approval (`status=pending`), oldest request first; `cursor` is the previous page's " +
          "`next_cursor`."
      )
  )
  .middleware(Authentication)
{}

/** Sessions: the context tasks share. */
export class SessionsGroup extends HttpApiGroup.make("sessions")
  .add(HttpApiEndpoint.get("get")`/v1/sessions/${sessionId}`.addSuccess(SessionInfo))
  .add(HttpApiEndpoint.del("reset")`/v1/sessions/${sessionId}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .middleware(Authentication)
{}

const llmId = HttpApiSchema.param("llm_id", LlmId)
const secretName = HttpApiSchema.param("name", SecretName)

/** Tenant LLMs, as the seed writes them. Admin only. */
export class LlmsGroup extends HttpApiGroup.make("llms")
  .add(HttpApiEndpoint.put("put")`/v1/llms/${llmId}`.setPayload(LlmConfig).addSuccess(LlmConfig))
  .add(HttpApiEndpoint.get("get")`/v1/llms/${llmId}`.addSuccess(LlmConfig))
  .add(HttpApiEndpoint.get("list", "/v1/llms").addSuccess(Schema.Array(LlmConfig)))
  .add(HttpApiEndpoint.del("delete")`/v1/llms/${llmId}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .middleware(Authentication)
{}

/** Tenant settings: default and fallback LLMs, egress allowlist, provider base URLs. Admin only. */
export class SettingsGroup extends HttpApiGroup.make("settings")
  .add(HttpApiEndpoint.put("put", "/v1/settings").setPayload(Settings).addSuccess(Settings))
  .add(HttpApiEndpoint.get("get", "/v1/settings").addSuccess(Settings))
  .middleware(Authentication)
{}

/** The tenant's spend this UTC day and this month, per budget (settings `budgets`). Any role. */
export class UsageGroup extends HttpApiGroup.make("usage")
  .add(HttpApiEndpoint.get("get", "/v1/usage").addSuccess(UsageReport))
  .middleware(Authentication)
{}

/** Write-only secrets, referred to by name from LLM configs and connections. Admin only. */
export class SecretsGroup extends HttpApiGroup.make("secrets")
  .add(
    HttpApiEndpoint.put("put")`/v1/secrets/${secretName}`
      .setPayload(Schema.Struct({ value: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(16_384)) }))
      .addSuccess(HttpApiSchema.NoContent)
  )
  .add(HttpApiEndpoint.del("delete")`/v1/secrets/${secretName}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .middleware(Authentication)
{}

const toolId = HttpApiSchema.param("tool_id", ToolId)
const provider = HttpApiSchema.param("provider", ProviderName)

/** Built-in and the tenant's own tools. Any role reads; admins write. */
export class ToolsGroup extends HttpApiGroup.make("tools")
  .add(HttpApiEndpoint.put("put")`/v1/tools/${toolId}`.setPayload(ToolDefinition).addSuccess(ToolSpec))
  .add(HttpApiEndpoint.get("list", "/v1/tools").addSuccess(Schema.Array(ToolSpec)))
  .add(HttpApiEndpoint.get("get")`/v1/tools/${toolId}`.addSuccess(ToolView))
  .add(HttpApiEndpoint.del("delete")`/v1/tools/${toolId}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .middleware(Authentication)
{}

/** The tenant's connections to providers (API keys and tokens). Admin only. */
export class ConnectionsGroup extends HttpApiGroup.make("connections")
  .add(HttpApiEndpoint.put("put")`/v1/connections/${provider}`.setPayload(ConnectionConfig).addSuccess(ConnectionInfo))
  .add(
    HttpApiEndpoint.post("authorize")`/v1/connections/${provider}/authorize`.addSuccess(AuthorizeResponse).addError(
      ConflictHttp
    )
  )
  .add(HttpApiEndpoint.get("list", "/v1/connections").addSuccess(Schema.Array(ConnectionInfo)))
  .add(HttpApiEndpoint.del("delete")`/v1/connections/${provider}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .addError(UpstreamFailedHttp)
  .middleware(Authentication)
{}

/**
 * The provider sends the tenant's user back here after consent. Unauthenticated: the single-use
 * `state` (bound to tenant and provider, 10 minutes) is the only proof.
 */
export class OAuthGroup extends HttpApiGroup.make("oauth")
  .add(
    HttpApiEndpoint.get("callback", "/v1/oauth/callback")
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
{}

export const Health = Schema.Struct({ status: Schema.Literal("ok") })
export const Readiness = Schema.Struct({
  status: Schema.Literal("ok"),
  checks: Schema.Record({ key: Schema.String, value: Schema.String })
})

/** Probes for Kubernetes; no authentication. */
export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("healthz", "/healthz").addSuccess(Health))
  .add(HttpApiEndpoint.get("readyz", "/readyz").addSuccess(Readiness))
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
  .add(OAuthGroup)
  .add(HealthGroup)
  .addError(InvalidRequestHttp)
  .addError(ForbiddenHttp)
  .addError(PayloadTooLargeHttp)
  .addError(UnavailableHttp)
  .addError(TooManyRequestsHttp)
  .annotate(OpenApi.Title, "Altan agent runtime")
  .annotate(OpenApi.Version, "0.1.0")
{}
