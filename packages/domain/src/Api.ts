import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Schema from "effect/Schema"
import {
  ConflictHttp,
  ForbiddenHttp,
  InvalidRequestHttp,
  NotFoundHttp,
  PayloadTooLargeHttp,
  UnauthorizedHttp,
  UnavailableHttp
} from "./Errors.js"
import { SessionId, TaskId } from "./Ids.js"
import { CurrentPrincipal } from "./Principal.js"
import { SessionInfo, Task, TaskRequest } from "./Task.js"

/** Verifies `Authorization: Bearer <JWT>` and provides the caller's `Principal`. */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("Authentication", {
  failure: UnauthorizedHttp,
  provides: CurrentPrincipal,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

const taskId = HttpApiSchema.param("task_id", TaskId)
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
  .add(HttpApiEndpoint.get("get")`/v1/tasks/${taskId}`.addSuccess(Task))
  .add(HttpApiEndpoint.post("cancel")`/v1/tasks/${taskId}/cancel`.addSuccess(Task))
  .addError(NotFoundHttp)
  .addError(ConflictHttp)
  .middleware(Authentication)
{}

/** Sessions: the context tasks share. */
export class SessionsGroup extends HttpApiGroup.make("sessions")
  .add(HttpApiEndpoint.get("get")`/v1/sessions/${sessionId}`.addSuccess(SessionInfo))
  .add(HttpApiEndpoint.del("reset")`/v1/sessions/${sessionId}`.addSuccess(HttpApiSchema.NoContent))
  .addError(NotFoundHttp)
  .middleware(Authentication)
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
  .add(SessionsGroup)
  .add(HealthGroup)
  .addError(InvalidRequestHttp)
  .addError(ForbiddenHttp)
  .addError(PayloadTooLargeHttp)
  .addError(UnavailableHttp)
  .annotate(OpenApi.Title, "Altan agent runtime")
  .annotate(OpenApi.Version, "0.1.0")
{}
