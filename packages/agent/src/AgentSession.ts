import { AgentSession } from "@altan/domain/AgentSession"
import { AuditLog } from "@altan/domain/AuditLog"
import { Connection, llmProvider } from "@altan/domain/Connection"
import { Conflict, InvalidRequest, NotFound } from "@altan/domain/Errors"
import { parseEntityId, type SessionId, type TaskId } from "@altan/domain/Ids"
import type { ChatMessage } from "@altan/domain/Llm"
import type { Plan, Step, Task, TaskError, TaskEventType, Turn } from "@altan/domain/Task"
import { emptyUsage, isTerminal } from "@altan/domain/Task"
import type { ToolSpec } from "@altan/domain/ToolDefinition"
import { catalogId, policyOf, ToolWorker } from "@altan/domain/ToolWorker"
import * as Entity from "@effect/cluster/Entity"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { AgentConfig } from "./AgentConfig.js"
import { systemPrompt, toolResult, trimHistory } from "./Conversation.js"
import { EventLog } from "./EventLog.js"
import * as PlanGraph from "./Plan.js"
import { type SessionState, SessionStore } from "./SessionStore.js"

const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms).toISOString())

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/** Maps any failure of a cluster call or tool to what is recorded on a step. */
const stepError = (error: unknown): TaskError => {
  const e = error as { _tag?: string; code?: string; message?: string; details?: Record<string, unknown> }
  switch (e._tag) {
    case "ToolNotFound":
    case "ToolInputInvalid":
    case "ToolFailed": {
      const extra = e._tag === "ToolFailed"
        ? {
          retryable: (e as any).retryable,
          ...((e as any).status ? { status: (e as any).status } : {}),
          ...((e as any).retry_after_ms !== undefined ? { retry_after_ms: (e as any).retry_after_ms } : {})
        }
        : e.details
      return { code: e.code!, message: e.message!, ...(extra ? { details: extra } : {}) }
    }
    case "ConnectionNeedsReauth":
      return { code: e.code!, message: e.message!, details: { provider: (e as any).provider } }
    case "RateLimited":
    case "UpstreamUnavailable":
      return {
        code: e.code!,
        message: e.message!,
        details: { provider: (e as any).provider, retry_after_ms: (e as any).retry_after_ms }
      }
    case "MailboxFull":
    case "AlreadyProcessingMessage":
    case "PersistenceError":
      return { code: "unavailable", message: `the tool service could not take the call (${e._tag})` }
    default:
      return { code: "internal_error", message: String(e.message ?? error) }
  }
}

/** A tool call's failure, carried to the steps that depend on it. */
class StepFailed {
  readonly _tag = "StepFailed"
  constructor(readonly step: string) {}
}

/**
 * `AgentSession[tenant/session]`: owns a session's tasks and context. Structured plans run as a
 * DAG; every tool call goes through `Connection[tenant/provider]`.
 */
export const AgentSessionLive = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* AgentConfig
  // Clients are built once for all sessions, not per activation.
  const connection = yield* Connection.client
  const toolWorker = yield* ToolWorker.client
  const sessions = yield* AgentSession.client
  const audit = yield* AuditLog
  return AgentSession.toLayer(
    Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const { key, tenantId } = parseEntityId(address.entityId)
      const sessionId = key as SessionId
      const store = yield* SessionStore
      const events = yield* EventLog
      const self = sessions(address.entityId)
      const attributes = { "tenant.id": tenantId, "session.id": sessionId }

      let state: Mutable<SessionState> = yield* store.load(tenantId, sessionId).pipe(
        Effect.map(Option.getOrElse(() => ({
          session_id: sessionId,
          tasks: {},
          task_ids: [],
          messages: [],
          variables: {},
          updated_at: ""
        })))
      )
      const exists = () => state.updated_at !== ""

      // Saves are serialized and each writes the newest state, so a slow save never overwrites a newer one.
      // A save still waiting for its turn will write every change made before it starts: later callers
      // join it instead of queueing another full write (parallel steps otherwise queue one each).
      const saveLock = yield* Effect.makeSemaphore(1)
      let queued: Deferred.Deferred<void> | undefined
      const persist = Effect.suspend(() => {
        if (queued !== undefined) return Deferred.await(queued)
        const save = Deferred.unsafeMake<void>(FiberId.none)
        queued = save
        return saveLock.withPermits(1)(Effect.suspend(() => {
          if (queued === save) queued = undefined
          return store.save(tenantId, state)
        })).pipe(
          Effect.onExit((exit) => Deferred.done(save, exit)),
          // once queued, the save is owed to whoever joined it
          Effect.uninterruptible
        )
      })

      const finished = new Map<TaskId, Deferred.Deferred<void>>()
      const finishedSignal = (taskId: TaskId) => {
        let d = finished.get(taskId)
        if (!d) {
          d = Deferred.unsafeMake<void>(FiberId.none)
          finished.set(taskId, d)
        }
        return d
      }
      const running = new Map<TaskId, Fiber.RuntimeFiber<unknown, unknown>>()

      const getTask = (taskId: TaskId) =>
        Option.fromNullable(state.tasks[taskId]).pipe(
          Effect.mapError(() => new NotFound({ message: `task ${taskId} not found` }))
        )

      const updateTask = (taskId: TaskId, f: (task: Task) => Task) =>
        Effect.gen(function*() {
          const at = yield* now
          const previous = state.tasks[taskId]!
          const task = { ...f(previous), updated_at: at }
          state = { ...state, tasks: { ...state.tasks, [taskId]: task }, updated_at: at }
          yield* persist
          if (isTerminal(task.status) && !isTerminal(previous.status)) {
            yield* emit(taskId, `task.${task.status}` as TaskEventType, {
              data: task.status === "succeeded" ? { output: task.output } : { error: task.error }
            })
            yield* Deferred.succeed(finishedSignal(taskId), void 0)
            finished.delete(taskId)
          }
          return task
        })

      const emit = (taskId: TaskId, type: TaskEventType, extra: { step_id?: string; data?: unknown } = {}) =>
        Effect.flatMap(now, (at) => events.append(tenantId, taskId, { type, task_id: taskId, at, ...extra })).pipe(
          Effect.zipRight(auditTask(taskId, type))
        )

      /** A task's acceptance and its end are audited, with who asked and, at the end, how long it took. */
      const auditTask = (taskId: TaskId, type: TaskEventType) => {
        const terminal = type === "task.succeeded" || type === "task.failed" || type === "task.cancelled"
        if (type !== "task.queued" && !terminal) return Effect.void
        const task = state.tasks[taskId]
        return Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
          audit.record({
            tenant_id: tenantId,
            ...(task?.user_id ? { user: task.user_id } : {}),
            action: terminal ? "task.finished" : "task.accepted",
            target: `task:${taskId}`,
            outcome: type === "task.failed" ? "failed" : "ok",
            ...(terminal && task ? { latency_ms: nowMs - Date.parse(task.created_at) } : {}),
            details: {
              session_id: sessionId,
              ...(terminal ? { status: type.slice(5) } : {}),
              ...(terminal && task?.error ? { error: task.error.code } : {})
            }
          }))
      }

      const updateStep = (taskId: TaskId, stepId: string, f: (step: Step) => Step) =>
        updateTask(taskId, (task) => ({ ...task, steps: task.steps.map((s) => (s.id === stepId ? f(s) : s)) }))

      const describe = (tools: ReadonlyArray<string>) =>
        Effect.forEach(
          new Set(tools),
          (tool) =>
            toolWorker(`${tenantId}/${tool}`).Describe().pipe(
              Effect.map((spec) => [tool, spec] as const),
              Effect.catchTag("ToolNotFound", () => Effect.succeed([tool, undefined] as const))
            ),
          { concurrency: "unbounded" }
        ).pipe(Effect.map((entries) => new Map(entries)))

      /** Validates a plan against its structure and the tools it names; nothing runs before this. */
      const checkPlan = (plan: Plan, allow: ReadonlyArray<string> | undefined) =>
        Effect.gen(function*() {
          const graph = yield* PlanGraph.validate(plan)
          for (const [i, step] of plan.steps.entries()) {
            if (allow && !allow.includes(step.tool)) {
              return yield* new InvalidRequest({
                code: "tool_not_allowed",
                message: `step "${step.id}" uses ${step.tool}, which is not in the task's tools`,
                details: { field: `input.steps.${i}.tool` }
              })
            }
          }
          const described = yield* describe(plan.steps.map((s) => s.tool)).pipe(
            Effect.mapError((e) =>
              new InvalidRequest({ code: "unavailable", message: `cannot look up tools: ${e._tag}` })
            )
          )
          for (const [i, step] of plan.steps.entries()) {
            if (!described.get(step.tool)) {
              return yield* new InvalidRequest({
                code: "unknown_tool",
                message: `step "${step.id}" uses unknown tool ${step.tool}`,
                details: { field: `input.steps.${i}.tool` }
              })
            }
          }
          const specs = described as ReadonlyMap<string, ToolSpec>
          yield* PlanGraph.checkRefPaths(graph, specs)
          return { graph, specs }
        })

      const runStep = (
        task: Task,
        step: Plan["steps"][number],
        spec: ToolSpec,
        input: unknown,
        limit: Effect.Semaphore
      ) =>
        limit.withPermits(1)(Effect.gen(function*() {
          const startedMs = yield* Clock.currentTimeMillis
          yield* updateTask(task.task_id, (t) => ({
            ...t,
            usage: { ...t.usage, tool_calls: t.usage.tool_calls + 1 },
            steps: t.steps.map((s) =>
              s.id === step.id
                ? {
                  ...s,
                  status: "running",
                  input,
                  attempts: s.attempts + 1,
                  started_at: new Date(startedMs).toISOString()
                }
                : s
            )
          }))
          yield* emit(task.task_id, "tool.started", { step_id: step.id, data: { tool: step.tool } })
          const exit = yield* connection(`${tenantId}/${spec.provider}`).Invoke({
            tool_id: step.tool,
            input,
            task_id: task.task_id,
            step_id: step.id,
            ...(task.llms && task.llms.length > 0 ? { llms: task.llms } : {}),
            ...(spec.fallback ? { fallback: spec.fallback } : {}),
            ...(task.tools ? { allowed_tools: task.tools } : {}),
            policy: policyOf(spec),
            priority: task.mode === "async" ? "async" : "sync",
            ...(task.mode === "sync" && task.timeout_ms !== undefined
              ? { deadline: Date.parse(task.created_at) + task.timeout_ms }
              : {})
          }).pipe(Effect.exit)
          const endMs = yield* Clock.currentTimeMillis
          const timing = { finished_at: new Date(endMs).toISOString(), duration_ms: endMs - startedMs }
          if (Exit.isSuccess(exit)) {
            yield* updateStep(task.task_id, step.id, (s) => {
              const { error: _, ...rest } = s
              return {
                ...rest,
                ...timing,
                status: "succeeded",
                output: exit.value.output,
                cached: exit.value.cached,
                ...(exit.value.attempts ? { attempts: exit.value.attempts } : {}),
                ...(exit.value.last_error ? { last_error: exit.value.last_error } : {}),
                ...(exit.value.served_by ? { served_by: exit.value.served_by } : {})
              }
            })
            yield* emit(task.task_id, "tool.completed", { step_id: step.id, data: { tool: step.tool, ...timing } })
            return exit.value.output
          }
          if (Exit.isInterrupted(exit)) return yield* Effect.interrupt
          const failure = Cause.squash(exit.cause)
          const error = stepError(failure)
          const tries = (failure as { attempts?: number }).attempts
          yield* updateStep(task.task_id, step.id, (s) => ({
            ...s,
            ...timing,
            status: "failed",
            error,
            ...(tries ? { attempts: tries } : {})
          }))
          yield* emit(task.task_id, "tool.failed", { step_id: step.id, data: { tool: step.tool, error } })
          return yield* Effect.fail(new StepFailed(step.id))
        })).pipe(
          Effect.withSpan("AgentSession.step", {
            attributes: { ...attributes, "step.id": step.id, "tool.id": step.tool },
            captureStackTrace: false
          })
        )

      /** Runs a plan's steps as soon as their dependencies are done, at most N tool calls at once. */
      /** Plans checked by `Submit`, handed to `Run`; after a restart `Run` checks the plan again. */
      const checked = new Map<TaskId, Effect.Effect.Success<ReturnType<typeof checkPlan>>>()

      const executePlan = (task: Task, plan: Plan) =>
        Effect.gen(function*() {
          const previous = checked.get(task.task_id)
          checked.delete(task.task_id)
          const { graph, specs } = previous ?? (yield* checkPlan(plan, task.tools))
          const limit = yield* Effect.makeSemaphore(config.maxParallelToolCalls)
          const done = new Map(plan.steps.map((s) => [s.id, Deferred.unsafeMake<unknown, StepFailed>(FiberId.none)]))
          const outputs = new Map<string, unknown>()
          yield* Effect.forEach(plan.steps, (step) =>
            Effect.gen(function*() {
              const previous = state.tasks[task.task_id]!.steps.find((s) => s.id === step.id)
              if (previous?.status === "succeeded") {
                // resumed after a restart: keep what already ran
                outputs.set(step.id, previous.output)
                return previous.output
              }
              const deps = graph.deps.get(step.id) ?? []
              const failedDep = yield* Effect.forEach(deps, (d) => Deferred.await(done.get(d)!).pipe(Effect.either))
                .pipe(Effect.map((results) => results.findIndex(Either.isLeft)))
              if (failedDep >= 0) {
                yield* updateStep(task.task_id, step.id, (s) => ({
                  ...s,
                  status: "skipped",
                  error: { code: "dependency_failed", message: `step "${deps[failedDep]}" did not succeed` }
                }))
                return yield* Effect.fail(new StepFailed(step.id))
              }
              const input = PlanGraph.resolve(step.input, outputs)
              if (Either.isLeft(input)) {
                yield* updateStep(task.task_id, step.id, (s) => ({
                  ...s,
                  status: "failed",
                  error: { code: "unresolved_ref", message: `$ref "${input.left.ref}": ${input.left.reason}` }
                }))
                return yield* Effect.fail(new StepFailed(step.id))
              }
              const output = yield* runStep(task, step, specs.get(step.tool)!, input.right, limit)
              outputs.set(step.id, output)
              return output
            }).pipe(
              Effect.exit,
              Effect.flatMap((exit) => Deferred.done(done.get(step.id)!, exit))
            ), { concurrency: "unbounded", discard: true })
          const steps = state.tasks[task.task_id]!.steps
          const failed = steps.filter((s) => s.status === "failed" || s.status === "skipped")
          if (failed.length === 0) {
            return yield* updateTask(task.task_id, (t) => ({
              ...t,
              status: "succeeded",
              output: outputs.get(plan.steps[plan.steps.length - 1]!.id)
            }))
          }
          const first = failed.find((s) => s.status === "failed") ?? failed[0]!
          return yield* updateTask(task.task_id, (t) => ({
            ...t,
            status: "failed",
            error: {
              code: "step_failed",
              message: `step "${first.id}" (${first.tool}) failed: ${first.error?.message ?? "unknown error"}`,
              details: { failed_steps: failed.map((s) => s.id) }
            }
          }))
        })

      const failTask = (taskId: TaskId, error: TaskError) =>
        updateTask(taskId, (t) => ({ ...t, status: "failed", error }))

      const recordTurn = (taskId: TaskId, turn: Omit<Turn, "finished_at">) =>
        Effect.flatMap(now, (at) =>
          updateTask(taskId, (t) => ({
            ...t,
            usage: {
              ...t.usage,
              llm_calls: t.usage.llm_calls + turn.attempts.length,
              prompt_tokens: t.usage.prompt_tokens + turn.prompt_tokens,
              completion_tokens: t.usage.completion_tokens + turn.completion_tokens
            },
            turns: [...(t.turns ?? []), { ...turn, finished_at: at }]
          })).pipe(
            Effect.zipLeft(emit(taskId, "llm.completed", {
              data: { llm_id: turn.llm_id, tool_calls: turn.tool_calls, attempts: turn.attempts.length }
            }))
          ))

      /**
       * The agent loop: an LLM turn, the turn's tool calls in parallel, their results back to the
       * model, until it answers without calling tools, runs out of turns or spends its token budget.
       */
      const executeConversation = (task: Task) =>
        Effect.gen(function*() {
          const llms = task.llms ?? []
          const maxSteps = task.max_steps ?? config.maxSteps
          const catalog = yield* toolWorker(catalogId(tenantId)).List().pipe(
            Effect.mapError((e) =>
              new InvalidRequest({ code: "unavailable", message: `cannot list the tools (${e._tag})` })
            )
          )
          const allowed = task.tools ? catalog.filter((t) => task.tools!.includes(t.tool_id)) : catalog
          const byId = new Map(allowed.map((t) => [t.tool_id as string, t]))
          const known = new Set(catalog.map((t) => t.tool_id as string))
          const functions = allowed.map((t) => ({
            name: t.tool_id,
            description: t.description,
            parameters: t.input_schema
          }))
          const history = trimHistory(state.messages as ReadonlyArray<ChatMessage>, config.historyBudgetChars)
          const transcript: Array<ChatMessage> = [{ role: "user", content: task.input as string }]
          const limit = yield* Effect.makeSemaphore(config.maxParallelToolCalls)

          for (let turn = 1; turn <= maxSteps; turn++) {
            const spent = state.tasks[task.task_id]!.usage
            if (spent.prompt_tokens + spent.completion_tokens >= config.taskTokenBudget) {
              return yield* failTask(task.task_id, {
                code: "token_budget",
                message: `the task spent its budget of ${config.taskTokenBudget} tokens`
              })
            }
            const result = yield* connection(`${tenantId}/${llmProvider(llms[0]!)}`).Complete({
              messages: [systemPrompt(allowed), ...history, ...transcript],
              tools: functions,
              fallbacks: llms.slice(1),
              task_id: task.task_id
            }).pipe(Effect.either)
            if (Either.isLeft(result)) {
              const e = result.left
              if ("attempts" in e) {
                yield* recordTurn(task.task_id, {
                  llm_id: llms[0]!,
                  attempts: e.attempts,
                  tool_calls: [],
                  prompt_tokens: 0,
                  completion_tokens: 0
                })
              }
              return yield* failTask(
                task.task_id,
                "code" in e
                  ? { code: e.code, message: e.message }
                  : { code: "unavailable", message: `the LLM gateway could not take the call (${e._tag})` }
              )
            }
            const completion = result.right
            yield* recordTurn(task.task_id, {
              llm_id: completion.llm_id,
              attempts: completion.attempts,
              tool_calls: completion.tool_calls.map((c) => c.name),
              ...completion.usage
            })
            transcript.push(
              completion.tool_calls.length > 0
                ? { role: "assistant", content: completion.content, tool_calls: completion.tool_calls }
                : { role: "assistant", content: completion.content }
            )
            if (completion.tool_calls.length === 0) {
              // the exchange becomes part of the session's context for its next tasks
              state = { ...state, messages: [...state.messages, ...transcript] }
              return yield* updateTask(
                task.task_id,
                (t) => ({ ...t, status: "succeeded", output: completion.content ?? "" })
              )
            }
            const calls = completion.tool_calls.map((call, i) => ({ call, id: `${turn}.${i + 1}` }))
            yield* updateTask(task.task_id, (t) => ({
              ...t,
              steps: [
                ...t.steps,
                ...calls.map(({ call, id }) => ({
                  id,
                  tool: call.name,
                  status: "pending" as const,
                  input: call.arguments,
                  attempts: 0
                }))
              ]
            }))
            const results = yield* Effect.forEach(calls, ({ call, id }) => {
              const spec = byId.get(call.name)
              if (!spec) {
                // never executed: the model learns why and may try something else
                const error = known.has(call.name)
                  ? { code: "tool_not_allowed", message: `${call.name} is not allowed for this task` }
                  : { code: "unknown_tool", message: `there is no tool named ${call.name}` }
                return updateStep(task.task_id, id, (s) => ({ ...s, status: "failed", error })).pipe(
                  Effect.as({ error })
                )
              }
              return runStep(task, { id, tool: spec.tool_id, input: {} }, spec, call.arguments, limit).pipe(
                Effect.map((output): unknown => ({ output })),
                Effect.catchTag(
                  "StepFailed",
                  () => Effect.sync(() => ({ error: state.tasks[task.task_id]!.steps.find((s) => s.id === id)?.error }))
                )
              )
            }, { concurrency: "unbounded" })
            calls.forEach(({ call }, i) =>
              transcript.push({
                role: "tool",
                tool_call_id: call.id,
                content: toolResult(results[i], config.maxToolResultChars)
              })
            )
          }
          return yield* failTask(task.task_id, {
            code: "max_steps",
            message: `no final answer after ${maxSteps} LLM turns`
          })
        })

      const execute = (taskId: TaskId) =>
        Effect.gen(function*() {
          const task = yield* updateTask(taskId, (t) => ({ ...t, status: "running" }))
          yield* emit(taskId, "task.started")
          return yield* (typeof task.input === "string" ? executeConversation(task) : executePlan(task, task.input))
            .pipe(
              Effect.catchTag("InvalidRequest", (e) =>
                updateTask(taskId, (t) => ({
                  ...t,
                  status: "failed",
                  error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }
                })))
            )
        }).pipe(
          Effect.onInterrupt(() =>
            updateTask(taskId, (t) =>
              isTerminal(t.status) ? t : {
                ...t,
                status: "cancelled",
                error: { code: "cancelled", message: "the task was cancelled" },
                steps: t.steps.map((s) =>
                  s.status === "running" || s.status === "pending" ? { ...s, status: "cancelled" as const } : s
                )
              }).pipe(Effect.ignore)
          ),
          Effect.withSpan("AgentSession.execute", {
            attributes: { ...attributes, "task.id": taskId },
            captureStackTrace: false
          })
        )

      return AgentSession.of({
        Submit: ({ payload }) =>
          Effect.gen(function*() {
            const { principal, request, task_id } = payload
            const existing = state.tasks[task_id]
            if (existing) return existing
            if (principal.tenantId !== tenantId) {
              return yield* new InvalidRequest({ message: "the principal does not belong to this session's tenant" })
            }
            if (typeof request.input === "string" && payload.llms.length === 0) {
              return yield* new InvalidRequest({
                code: "llm_not_configured",
                message: "natural-language tasks need an LLM, and none is configured for this tenant; " +
                  "send a structured plan ({\"steps\": [...]}) instead",
                details: { field: "input" }
              })
            }
            const plan = typeof request.input === "string" ? undefined : yield* checkPlan(request.input, request.tools)
            const at = yield* now
            const task: Task = {
              task_id,
              session_id: sessionId,
              status: "queued",
              input: request.input,
              steps: typeof request.input === "string"
                ? []
                : request.input.steps.map((s) => ({ id: s.id, tool: s.tool, status: "pending", attempts: 0 })),
              usage: emptyUsage,
              ...(payload.llms.length > 0 ? { llm_id: payload.llms[0]!, llms: payload.llms } : {}),
              ...(request.max_steps ? { max_steps: request.max_steps } : {}),
              ...(request.tools ? { tools: request.tools } : {}),
              ...(request.idempotency_key ? { idempotency_key: request.idempotency_key } : {}),
              mode: request.mode,
              timeout_ms: request.timeout_ms,
              user_id: principal.userId,
              created_at: at,
              updated_at: at
            }
            state = {
              ...state,
              tasks: { ...state.tasks, [task_id]: task },
              task_ids: [...state.task_ids, task_id],
              updated_at: at
            }
            yield* persist
            yield* emit(task_id, "task.queued")
            if (plan) checked.set(task_id, plan)
            // The run is a persisted message too: it is redelivered if this runner dies mid-task.
            yield* self.Run({ task_id }, { discard: true }).pipe(
              Effect.catchAll((e) =>
                updateTask(task_id, (t) => ({
                  ...t,
                  status: "failed",
                  error: { code: "unavailable", message: `could not schedule the task: ${e._tag}` }
                }))
              )
            )
            return task
          }).pipe(
            Effect.withSpan("AgentSession.submit", {
              attributes: { ...attributes, "task.id": payload.task_id },
              captureStackTrace: false
            })
          ),

        Run: ({ payload }) =>
          Effect.gen(function*() {
            const task = yield* getTask(payload.task_id)
            if (isTerminal(task.status)) return task
            const fiber = yield* Effect.fork(execute(payload.task_id))
            running.set(payload.task_id, fiber)
            yield* Fiber.await(fiber).pipe(Effect.ensuring(Effect.sync(() => running.delete(payload.task_id))))
            return state.tasks[payload.task_id]!
          }),

        GetTask: ({ payload }) =>
          Effect.gen(function*() {
            const task = yield* getTask(payload.task_id)
            if (isTerminal(task.status) || !payload.wait_ms) return task
            yield* Deferred.await(finishedSignal(payload.task_id)).pipe(
              Effect.timeoutOption(payload.wait_ms)
            )
            return state.tasks[payload.task_id]!
          }),

        Events: ({ payload }) =>
          getTask(payload.task_id).pipe(
            Effect.map(() => events.follow(tenantId, payload.task_id, payload.after)),
            Stream.unwrap
          ),

        Cancel: ({ payload }) =>
          Effect.gen(function*() {
            const task = yield* getTask(payload.task_id)
            if (isTerminal(task.status)) {
              return yield* new Conflict({
                code: "task_finished",
                message: `task ${payload.task_id} already ${task.status}`,
                details: { status: task.status }
              })
            }
            const fiber = running.get(payload.task_id)
            if (fiber) return yield* Fiber.interrupt(fiber).pipe(Effect.map(() => state.tasks[payload.task_id]!))
            return yield* updateTask(payload.task_id, (t) => ({
              ...t,
              status: "cancelled",
              error: { code: "cancelled", message: "the task was cancelled" },
              steps: t.steps.map((s) => (s.status === "pending" ? { ...s, status: "cancelled" as const } : s))
            }))
          }).pipe(Effect.withSpan("AgentSession.cancel", { attributes, captureStackTrace: false })),

        GetSession: () =>
          exists()
            ? Effect.succeed({
              session_id: sessionId,
              task_ids: state.task_ids as ReadonlyArray<TaskId>,
              message_count: state.messages.length,
              updated_at: state.updated_at
            })
            : Effect.fail(new NotFound({ message: `session ${sessionId} not found` })),

        Reset: () =>
          Effect.gen(function*() {
            if (!exists()) return
            state = { ...state, messages: [], variables: {}, updated_at: yield* now }
            yield* persist
          })
      })
    }),
    { concurrency: "unbounded", maxIdleTime: config.sessionMaxIdleTime }
  )
}))
