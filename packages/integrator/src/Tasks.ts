import { acceptedTask, AgentSession } from "@altan/domain/AgentSession"
import {
  approvalRules,
  checkDecision,
  type Decision,
  defaultApprovalTimeoutSeconds,
  isRepeat
} from "@altan/domain/Approval"
import { type ClusterError, isClusterError } from "@altan/domain/EntityCall"
import { Conflict, InvalidRequest, TooManyRequests, Unavailable } from "@altan/domain/Errors"
import { entityId, type SessionId, sessionOfTask, type TaskId, type TenantId } from "@altan/domain/Ids"
import { canonicalJson } from "@altan/domain/Json"
import * as PlanGraph from "@altan/domain/PlanGraph"
import type { Principal } from "@altan/domain/Principal"
import { defaultConnectionTimeoutSeconds, type Settings } from "@altan/domain/Settings"
import type { Plan, Task, TaskQuery, TaskRequest } from "@altan/domain/Task"
import { TenantTasks } from "@altan/domain/TenantTasks"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { ToolInputInvalid, ToolNotFound, ToolWorker } from "@altan/domain/ToolWorker"
import * as EntityAddress from "@effect/cluster/EntityAddress"
import * as EntityId from "@effect/cluster/EntityId"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { createHash, randomFillSync } from "node:crypto"
import { Admission } from "./Admission.js"
import { clusterUnavailable, orUnavailable } from "./internal/clusterCall.js"
import { oauthRedirectUri } from "./internal/redirectUri.js"
import { TenantConfig } from "./TenantConfig.js"

// random ids drawn from a pool filled 256 at a time: one `randomBytes` call per id cost more than the rest of the id
const idBytes = 12
const pool = Buffer.alloc(idBytes * 256)
let pooled = pool.length
const random = () => {
  if (pooled === pool.length) {
    randomFillSync(pool)
    pooled = 0
  }
  pooled += idBytes
  return pool.toString("base64url", pooled - idBytes, pooled)
}
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

/**
 * How long the edge waits for the session to answer a submit. Past it the edge asks the cluster's storage
 * whether the submit is stored: if it is, the task is accepted (it will run) and the edge answers 202 at once.
 */
const acceptWait = Duration.seconds(3)

/** How long the edge waits for the tool service to describe a plan's tools. */
const describeWait = Duration.seconds(5)
/** How long the edge waits to read a task it knows is accepted, before it answers it as accepted. */
const readWait = Duration.seconds(5)
/** A tool's spec as the edge last read it is used as is this long, and while the tool service cannot answer, this long. */
const specFreshMs = 2_000
const specStaleMs = 10 * 60_000
const maxSpecs = 10_000
/** Inputs remembered as accepted per tool spec (the oldest forgotten first). */
const maxAcceptedInputs = 1_000

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
    const workers = yield* ToolWorker.client
    const tenantTasks = yield* TenantTasks.client
    const sharding = yield* Sharding.Sharding
    const storage = yield* MessageStorage.MessageStorage
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

    // specs the tool service gave lately, by tenant and tool: fresh ones spare a round trip, older ones answer while
    // the tool service cannot (a tool runner failing over), so known tools stay usable
    const specCache = new Map<string, { readonly spec: ToolSpec; readonly at: number }>()
    const describe = (tenantId: TenantId, tool: string) =>
      Effect.gen(function*() {
        const key = entityId(tenantId, tool)
        const now = yield* Clock.currentTimeMillis
        const cached = specCache.get(key)
        if (cached && now - cached.at < specFreshMs) return Option.some(cached.spec)
        return yield* workers(key).Describe().pipe(
          Effect.map((spec) => {
            specCache.delete(key)
            specCache.set(key, { spec, at: now })
            if (specCache.size > maxSpecs) specCache.delete(specCache.keys().next().value!)
            return Option.some(spec)
          }),
          Effect.catchTag("ToolNotFound", () => Effect.sync(() => (specCache.delete(key), Option.none<ToolSpec>()))),
          Effect.timeoutFail({ duration: describeWait, onTimeout: () => ({ _tag: "no answer in time" as const }) }),
          Effect.catchAll((e) =>
            cached && now - cached.at < specStaleMs
              ? Effect.succeed(Option.some(cached.spec))
              : Effect.fail(
                new Unavailable({
                  message: `the tool service could not describe ${tool} (${e._tag}); retry later`,
                  details: { retry_after_ms: 2000 }
                })
              )
          )
        )
      })

    // inputs the tool service accepted, by the spec it was described with: a spec is replaced when the tool is
    // described again (every `specFreshMs`), which forgets what was accepted under the old one
    const acceptedInputs = new WeakMap<ToolSpec, Set<string>>()
    const rememberAccepted = (spec: ToolSpec, key: string) => {
      let accepted = acceptedInputs.get(spec)
      if (!accepted) acceptedInputs.set(spec, accepted = new Set())
      if (accepted.size >= maxAcceptedInputs) accepted.delete(accepted.values().next().value!)
      accepted.add(key)
    }

    /**
     * Checks an input against its tool's schema with the tool service (the tool's own decoder), nothing run: a
     * refusal is a 400 naming `label` and the field under `field`.
     */
    const checkInput = (tenantId: TenantId, tool: string, input: unknown, field: string, label: string) =>
      workers(entityId(tenantId, tool)).CheckInput({ input }).pipe(
        Effect.timeoutFail({ duration: describeWait, onTimeout: () => ({ _tag: "no answer in time" as const }) }),
        Effect.mapError((e) =>
          ToolInputInvalid.is(e)
            ? new InvalidRequest({
              code: e.code,
              message: `${label}: ${e.message}`,
              details: {
                ...(e.details ?? {}),
                field: `${field}${e.details?.["field"] ? `.${e.details["field"]}` : ""}`
              }
            })
            // removed since the edge last described it (its spec is kept a moment)
            : ToolNotFound.is(e)
            ? (specCache.delete(entityId(tenantId, tool)),
              new InvalidRequest({
                code: "unknown_tool",
                message: `${label}: unknown tool ${tool}`,
                details: { field }
              }))
            : new Unavailable({
              message: `the tool service could not check ${label} (${e._tag}); retry later`,
              details: { retry_after_ms: 2000 }
            })
        )
      )

    /**
     * Checks a plan before anything is accepted: its structure, the task's tool allowlist, that every tool exists,
     * and every `$ref` path against the referenced tool's output schema. Answers the tools' specs, which go with
     * the task. The tool service not answering is a 503: nothing was accepted.
     */
    const checkPlan = (
      principal: Principal,
      plan: Plan,
      allow: ReadonlyArray<string> | undefined,
      allowFrom: "task" | "settings"
    ) =>
      Effect.gen(function*() {
        const graph = yield* PlanGraph.validate(plan)
        for (const [i, step] of plan.steps.entries()) {
          if (allow && !allow.includes(step.tool)) {
            return yield* new InvalidRequest({
              code: "tool_not_allowed",
              message: allowFrom === "task"
                ? `step "${step.id}" uses ${step.tool}, which is not in the task's tools`
                : `step "${step.id}" uses ${step.tool}, which is not in the tenant's default tools (settings.tools); ` +
                  `a task that lists its own tools may use it`,
              details: { field: `input.steps.${i}.tool` }
            })
          }
        }
        const tools = [...new Set(plan.steps.map((s) => s.tool as string))]
        // one tool (most plans) is described without forking a fiber for it
        const described = yield* Effect.forEach(tools, (tool) => describe(principal.tenantId, tool), {
          concurrency: tools.length > 1 ? "unbounded" : 1
        })
        const specs = new Map<string, ToolSpec>()
        tools.forEach((tool, i) => Option.map(described[i]!, (spec) => specs.set(tool, spec)))
        for (const [i, step] of plan.steps.entries()) {
          if (!specs.has(step.tool)) {
            return yield* new InvalidRequest({
              code: "unknown_tool",
              message: `step "${step.id}" uses unknown tool ${step.tool}`,
              details: { field: `input.steps.${i}.tool` }
            })
          }
        }
        yield* PlanGraph.checkRefPaths(graph, specs)
        // inputs known now (no $ref) are checked against their tool's schema before anything is accepted; one the
        // tool accepted lately, under the same spec, is not sent again
        const unchecked = plan.steps.flatMap((step, i) => {
          if (PlanGraph.hasRefs(step.input)) return []
          const spec = specs.get(step.tool)!
          const key = canonicalJson(step.input)
          return acceptedInputs.get(spec)?.has(key) ? [] : [{ step, i, spec, key }]
        })
        if (unchecked.length > 0) {
          yield* Effect.forEach(
            unchecked,
            ({ i, key, spec, step }) =>
              checkInput(principal.tenantId, step.tool, step.input, `input.steps.${i}.input`, `step "${step.id}"`)
                .pipe(Effect.tap(() => Effect.sync(() => rememberAccepted(spec, key)))),
            { concurrency: unchecked.length > 1 ? "unbounded" : 1, discard: true }
          )
        }
        return [...specs.values()]
      })

    /** Whether the cluster has stored the session's `Submit` of this task: then it is accepted and will run. */
    const isStored = (principal: Principal, sessionId: SessionId, taskId: TaskId) =>
      Effect.gen(function*() {
        const id = EntityId.make(entityId(principal.tenantId, sessionId))
        const address = EntityAddress.make({
          entityType: AgentSession.type,
          entityId: id,
          shardId: sharding.getShardId(id, "agent")
        })
        return Option.isSome(yield* storage.requestIdForPrimaryKey({ address, tag: "Submit", id: taskId }))
      })

    /**
     * Submits a task and answers it as it then is: in sync mode once it finished or `timeout_ms` passed,
     * in async mode as accepted. A repeated idempotency key answers the task the first submit created.
     *
     * The answer is never unknowable: 200/202 once the cluster has stored the submit (the task will run, whatever
     * fails next), 4xx when the request is refused before that, and 503 only when nothing was stored (nothing of
     * the request will ever run; repeating it, with its idempotency key, is safe).
     */
    const submitAdmitted = Effect.fn("Tasks.submit", { captureStackTrace: false })(function*(
      principal: Principal,
      asked: TaskRequest,
      settings: Settings
    ) {
      // a task that names no tools gets the tenant's default toolset, if it has one; the task shows which it got
      const request = asked.tools === undefined && settings.tools !== undefined
        ? { ...asked, tools: settings.tools }
        : asked
      const { sessionId, taskId } = taskIds(principal.tenantId, request.session_id, request.idempotency_key)
      yield* Effect.annotateCurrentSpan({
        "altan.tenant_id": principal.tenantId,
        "altan.session_id": sessionId,
        "altan.task_id": taskId
      })
      const target = session(principal, sessionId)
      const llms = yield* resolveLlms(config, principal, request, settings)
      const specs = typeof request.input === "string"
        ? []
        : yield* checkPlan(principal, request.input, request.tools, asked.tools === undefined ? "settings" : "task")
      const payload = {
        task_id: taskId,
        request,
        principal,
        llms,
        specs,
        on_unknown_outcome: settings.on_unknown_outcome ?? "fail",
        accepted_at: new Date(yield* Clock.currentTimeMillis).toISOString(),
        approval_required: approvalRules(settings.approval_required, request.approval_required),
        approval_timeout_ms: (settings.approval_timeout ?? defaultApprovalTimeoutSeconds) * 1000,
        connection_timeout_ms: (settings.connection_timeout ?? defaultConnectionTimeoutSeconds) * 1000,
        ...Option.match(yield* oauthRedirectUri, {
          onNone: () => ({}),
          onSome: (uri) => ({ oauth_redirect_uri: uri })
        })
      }
      const notAccepted = (reason: string) =>
        new Unavailable({
          message: `the task was not accepted (${reason}); nothing of it will run: retry later`,
          details: { retry_after_ms: 1000 }
        })
      // the submit is uninterruptible from here: stopping to wait for it undoes nothing. A sync task runs in its
      // submit, whose answer is the task once it ended (or waits), so its wait is the task's timeout
      const wait = request.mode === "sync" ? Duration.millis(request.timeout_ms) : acceptWait
      const task: Task = yield* target.Submit(payload).pipe(
        Effect.timeoutFail({ duration: wait, onTimeout: () => ({ _tag: "no answer in time" as const }) }),
        // the session's own refusals are answers; anything else (a timeout, a cluster error, a transport defect)
        // leaves the question of whether the submit was stored, which the cluster's storage settles
        Effect.catchAllCause((cause): Effect.Effect<Task, InvalidRequest | Conflict | Unavailable> => {
          const failure = Cause.failureOption(cause)
          if (Option.exists(failure, (e) => InvalidRequest.is(e) || Conflict.is(e))) {
            return Effect.failCause(cause as Cause.Cause<InvalidRequest | Conflict>)
          }
          if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
          const reason = Option.match(failure, { onNone: () => "no answer", onSome: (e) => e._tag })
          return isStored(principal, sessionId, taskId).pipe(
            Effect.retry({ times: 3, schedule: Schedule.spaced("300 millis") }),
            // the storage that would say cannot: say so, rather than that nothing was accepted
            Effect.mapError((e) =>
              new Unavailable({
                message: `whether the task was accepted is not known (${reason}; the cluster's storage did not ` +
                  `answer: ${e._tag}); repeat the request with the same idempotency_key, which is safe`,
                details: { task_id: taskId, session_id: sessionId, acceptance: "unknown", retry_after_ms: 1000 }
              })
            ),
            Effect.flatMap((stored) =>
              stored
                // accepted: answered as it stands now if the session can say, else as accepted (202, never a 503)
                ? target.GetTask({ task_id: taskId }).pipe(
                  Effect.timeout(readWait),
                  Effect.catchAllCause((cause): Effect.Effect<Task> =>
                    Cause.isInterruptedOnly(cause)
                      ? Effect.failCause(cause as Cause.Cause<never>)
                      : Effect.succeed(acceptedTask(payload))
                  )
                )
                : Effect.fail(notAccepted(reason))
            )
          )
        })
      )
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

    /**
     * A decision on a call that waits for approval. The session records it from a persisted message, whose answer is
     * kept for repeats: what can be refused is refused here first (the wrong person, a call that does not wait, a
     * stale hash, an edited input the tool would refuse), so a stored answer is the decision's own.
     */
    const decide = Effect.fn("Tasks.decide", { captureStackTrace: false })(function*(
      principal: Principal,
      taskId: TaskId,
      stepId: string,
      decision: Decision
    ) {
      const target = sessionFor(principal, taskId)
      const task = yield* orUnavailable(target.GetTask({ task_id: taskId }))
      const step = task.steps.find((s) => s.id === stepId)
      // a repeat of what is recorded is answered by the session (a stored decision stands); the rest must apply now
      if (step === undefined || !isRepeat(step, principal, decision)) {
        yield* checkDecision(task, stepId, principal, decision)
      }
      if (decision._tag === "Approve" && decision.input !== undefined) {
        yield* checkInput(principal.tenantId, step!.tool, decision.input, "input", "the edited input")
      }
      return yield* orUnavailable(target.Decide({ task_id: taskId, step_id: stepId, principal, decision }))
    })

    /** The tenant's tasks, newest first (a summary each). */
    const list = (principal: Principal, query: typeof TaskQuery.Type) =>
      Effect.zipRight(
        admit(principal),
        orUnavailable(
          tenantTasks(principal.tenantId).ListTasks({
            ...(query.session_id ? { session_id: query.session_id } : {}),
            ...(query.status ? { status: query.status } : {}),
            ...(query.cursor ? { cursor: query.cursor } : {}),
            limit: query.limit ?? 20
          })
        )
      )

    /** The tenant's calls waiting for approval that `principal` may decide: all for an admin, a member's own. */
    const pendingApprovals = (principal: Principal, cursor: string | undefined, limit: number) =>
      orUnavailable(tenantTasks(principal.tenantId).PendingApprovals({ ...(cursor ? { cursor } : {}), limit })).pipe(
        Effect.map((page) =>
          principal.role === "admin" ? page : {
            ...page,
            approvals: page.approvals.filter((a) => a.user_id === principal.userId)
          }
        )
      )

    return { submit, list, get, cancel, decide, pendingApprovals, events, getSession, resetSession } as const
  })
}) {}
