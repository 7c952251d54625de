import { AgentSession } from "@altan/domain/AgentSession"
import { InvalidRequest, TooManyRequests, Unavailable } from "@altan/domain/Errors"
import { entityId, type SessionId, sessionOfTask, type TaskId } from "@altan/domain/Ids"
import type { Principal } from "@altan/domain/Principal"
import type { Settings } from "@altan/domain/Settings"
import { isTerminal, type TaskRequest } from "@altan/domain/Task"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import { Admission } from "./Admission.js"
import { type ClusterError, isClusterError } from "./Resilience.js"
import { TenantConfig } from "./TenantConfig.js"

const random = () => randomBytes(12).toString("base64url")
const digest = (...parts: ReadonlyArray<string>) =>
  createHash("sha256").update(parts.join("\u0000")).digest("base64url").slice(0, 24)

/**
 * Ids of a new task. With an idempotency key both are derived from it, so a repeat lands on the same
 * persisted `Submit` and answers the task it created.
 */
export const taskIds = (tenantId: string, sessionId: string | undefined, key: string | undefined) => {
  const session = sessionId ?? (key ? `k${digest(tenantId, key)}` : `ses_${random()}`)
  const task = key ? `${session}.k${digest(tenantId, session, key)}` : `${session}.${random()}`
  return { sessionId: session as SessionId, taskId: task as TaskId }
}

/** Cluster delivery failures are the runtime's, not the caller's: 503. */
const clusterUnavailable = (e: { readonly _tag: string }) =>
  new Unavailable({ message: `the agent service could not take the request (${e._tag}); retry later` })

/** How long the edge waits for the agent service beyond any wait the request itself asked for. */
const callTimeout = Duration.seconds(15)

/**
 * Bounds a call into the cluster: while no runner owns the session's shard, the cluster retries
 * delivery indefinitely, and the caller gets a 503 rather than a hung request.
 */
export const orUnavailable = <A, E extends { readonly _tag: string }, R>(
  effect: Effect.Effect<A, E, R>,
  extraWait: Duration.DurationInput = 0
): Effect.Effect<A, Exclude<E, ClusterError> | Unavailable, R> =>
  effect.pipe(
    Effect.catchIf(isClusterError, (e) => Effect.fail(clusterUnavailable(e))),
    Effect.timeoutFail({
      duration: Duration.sum(callTimeout, extraWait),
      onTimeout: () => new Unavailable({ message: "the agent service did not answer in time; retry later" })
    })
  ) as any

/**
 * The LLMs a natural-language task will use, in order: the task's `llm_id` or the tenant's
 * `default_llm`, then the configured `fallback_llms`. Resolved here, where tenant configuration lives.
 */
const resolveLlms = (config: TenantConfig["Type"], principal: Principal, request: TaskRequest, settings: Settings) =>
  Effect.gen(function*() {
    // a plan needs an LLM only for its text.generate steps, which use the tenant's default unless llm_id says otherwise
    if (typeof request.input !== "string" && request.llm_id === undefined) return []
    const primary = request.llm_id ?? settings.default_llm
    if (!primary) {
      return yield* new InvalidRequest({
        code: "llm_not_configured",
        message: "natural-language tasks need an LLM: configure one (PUT /v1/llms/{llm_id}) and set default_llm " +
          "(PUT /v1/settings), or pass llm_id",
        details: { field: "input" }
      })
    }
    if (Option.isNone(yield* config.getLlm(principal.tenantId, primary))) {
      return yield* new InvalidRequest({
        code: "unknown_llm",
        message: `no LLM "${primary}" is configured for this tenant`,
        details: { field: request.llm_id ? "llm_id" : "settings.default_llm" }
      })
    }
    const fallbacks: Array<string> = []
    for (const id of settings.fallback_llms) {
      if (id !== primary && Option.isSome(yield* config.getLlm(principal.tenantId, id))) fallbacks.push(id)
    }
    return [primary, ...fallbacks]
  })

/**
 * The task API against the `AgentSession` entities, shared by the HTTP handlers and the RPC handlers.
 * Every call is scoped to the principal's tenant: a task id routes to `AgentSession[<tenant>/<session>]`,
 * so another tenant's id can only reach the caller's own, empty, session (NotFound).
 */
export class Tasks extends Effect.Service<Tasks>()("@altan/integrator/Tasks", {
  effect: Effect.gen(function*() {
    const sessions = yield* AgentSession.client
    const config = yield* TenantConfig
    const admission = yield* Admission
    /** Every task request passes the tenant's rate at this edge first; the settings read for it are handed on. */
    const admit = (principal: Principal) =>
      Effect.flatMap(
        config.getSettings(principal.tenantId),
        (settings) => Effect.as(admission.admit(principal.tenantId, settings.admission), settings)
      )
    const session = (principal: Principal, sessionId: SessionId) => sessions(entityId(principal.tenantId, sessionId))
    const sessionFor = (principal: Principal, taskId: TaskId) => session(principal, sessionOfTask(taskId))

    /**
     * Submits a task and answers it as it then is: in sync mode once it finished or `timeout_ms` passed,
     * in async mode as accepted. A repeated idempotency key answers the task the first submit created.
     */
    const submitAdmitted = Effect.fn("Tasks.submit", { captureStackTrace: false })(function*(
      principal: Principal,
      request: TaskRequest,
      settings: Settings
    ) {
      const { sessionId, taskId } = taskIds(principal.tenantId, request.session_id, request.idempotency_key)
      const target = session(principal, sessionId)
      const llms = yield* resolveLlms(config, principal, request, settings)
      // The submit is persisted: if it times out here it may still run once delivered.
      const accepted = yield* orUnavailable(target.Submit({ task_id: taskId, request, principal, llms })).pipe(
        Effect.mapError((e) =>
          e._tag === "Unavailable"
            ? new Unavailable({
              message:
                `${e.message}; the task may still run: read it by its id, or repeat with the same idempotency_key`,
              details: { task_id: taskId, session_id: sessionId }
            })
            : e
        )
      )
      const task = request.mode === "sync" && !isTerminal(accepted.status)
        ? yield* orUnavailable(target.GetTask({ task_id: taskId, wait_ms: request.timeout_ms }), request.timeout_ms)
        : accepted
      // a sync task refused by a provider's budget (its wait would pass the timeout) is the caller's 429
      const limited = task.status === "failed"
        ? task.steps.find((s) => s.error?.code === "rate_limited")
        : undefined
      if (limited) {
        return yield* new TooManyRequests({
          message: `${limited.error!.message}; the task ${taskId} failed without calling the provider`,
          details: { retry_after_ms: limited.error!.details?.["retry_after_ms"] ?? 1000, task_id: taskId }
        })
      }
      return task
    })

    // a submit holds one of the tenant's task slots at this edge while it runs (a sync one until it answers)
    const submit = (principal: Principal, request: TaskRequest) =>
      Effect.flatMap(
        admit(principal),
        (settings) =>
          admission.task(principal.tenantId, settings.admission, submitAdmitted(principal, request, settings))
      )

    const get = (principal: Principal, taskId: TaskId) =>
      Effect.zipRight(admit(principal), orUnavailable(sessionFor(principal, taskId).GetTask({ task_id: taskId })))

    /** Interrupts the task's running steps; `Conflict` once it has finished. */
    const cancel = (principal: Principal, taskId: TaskId) =>
      orUnavailable(sessionFor(principal, taskId).Cancel({ task_id: taskId }))

    /**
     * The task's events after `after` (an event id), then live ones; the stream ends after the terminal
     * event. The task must exist before the stream starts, so a wrong id fails here, not as an empty stream.
     */
    const events = (principal: Principal, taskId: TaskId, after?: string) =>
      Effect.gen(function*() {
        const target = sessionFor(principal, taskId)
        yield* orUnavailable(target.GetTask({ task_id: taskId }))
        return target.Events({ task_id: taskId, ...(after ? { after } : {}) }).pipe(
          Stream.mapError((e) => isClusterError(e) ? clusterUnavailable(e) : e as Exclude<typeof e, ClusterError>)
        )
      })

    const getSession = (principal: Principal, sessionId: SessionId) =>
      orUnavailable(session(principal, sessionId).GetSession())

    /** Clears the session's context (its conversation); its tasks stay readable. */
    const resetSession = (principal: Principal, sessionId: SessionId) =>
      orUnavailable(session(principal, sessionId).Reset())

    return { submit, get, cancel, events, getSession, resetSession } as const
  })
}) {}
