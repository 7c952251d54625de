import type { BudgetName } from "@altan/domain/Budget"
import { BudgetExhausted, llmConnectionId, llmProvider } from "@altan/domain/Connection"
import { reaskOnBreak } from "@altan/domain/EntityCall"
import type { TaskId } from "@altan/domain/Ids"
import type { ChatMessage, Completion } from "@altan/domain/Llm"
import {
  isTerminal,
  llmTurnWaits,
  type Task,
  type TaskError,
  type Turn,
  waitingFor,
  withoutWaiting
} from "@altan/domain/Task"
import type { ToolWorker } from "@altan/domain/ToolWorker"
import { catalogId } from "@altan/domain/ToolWorker"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type { AgentConfig } from "./AgentConfig.js"
import { systemPrompt, toolResult } from "./Conversation.js"
import { backoff, durably, now, waitingEvent } from "./SessionTasks.js"
import { budgetRefusal, notTaken, runStep, type StepContext, waitForBudget } from "./StepRunner.js"
import type { TaskStore } from "./TaskStore.js"

/** What the agent loop needs besides a step's context. */
export interface LoopContext extends StepContext {
  readonly config: AgentConfig["Type"]
  readonly store: TaskStore["Type"]
  readonly toolWorker: Effect.Effect.Success<typeof ToolWorker.client>
}

/** The budgets an LLM turn spends. */
const llmBudgets: ReadonlyArray<BudgetName> = ["llm_tokens", "cost_usd"]

/** A call of the turn that waits for a decision. */
const waiting = Symbol("waiting")

/** The LLM turn of this many assistant messages in: turn 1 is the first. */
const turnsIn = (transcript: ReadonlyArray<ChatMessage>) => transcript.filter((m) => m.role === "assistant").length

/**
 * The agent loop of a natural-language task: an LLM turn, the turn's tool calls in parallel (each a step), their
 * results back to the model, until it answers without calling tools, runs out of turns or spends its token budget.
 *
 * The task's exchange (its transcript) is recorded with every turn and every batch of tool results, so a task
 * resumed on another runner goes on from its last recorded turn: tool calls of that turn that had started ask again
 * for their attempt (see `runStep`), finished ones keep their results, and the model is not asked that turn again.
 */
export const runConversation = (ctx: LoopContext, taskId: TaskId): Effect.Effect<Task> =>
  Effect.gen(function*() {
    const { config, tasks, tenantId } = ctx
    const start = tasks.current(taskId)
    const llms = start.task.llms ?? []
    const maxSteps = start.task.max_steps ?? config.maxSteps
    const fail = (error: TaskError) => tasks.updateTask(taskId, (t) => ({ ...t, status: "failed", error }))

    const catalog = yield* ctx.toolWorker(catalogId(tenantId)).List().pipe(
      reaskOnBreak,
      Effect.retry({ schedule: backoff, while: notTaken }),
      Effect.timeout(ctx.stepTimeout),
      Effect.either
    )
    if (Either.isLeft(catalog)) {
      return yield* fail({ code: "unavailable", message: `cannot list the tools (${catalog.left._tag})` })
    }
    const allowed = start.task.tools
      ? catalog.right.filter((t) => start.task.tools!.includes(t.tool_id))
      : catalog.right
    const byId = new Map(allowed.map((t) => [t.tool_id as string, t]))
    const known = new Set(catalog.right.map((t) => t.tool_id as string))
    const functions = allowed.map((t) => ({ name: t.tool_id, description: t.description, parameters: t.input_schema }))
    const history = yield* durably(
      `reading the conversation of ${start.task.session_id}`,
      ctx.store.recentMessages(tenantId, start.task.session_id, config.historyBudgetChars)
    )

    /** Runs the tool calls of the transcript's last turn (those not done yet) and records their results. */
    const callTools = (turn: number, calls: NonNullable<Extract<ChatMessage, { role: "assistant" }>["tool_calls"]>) =>
      Effect.gen(function*() {
        // in parallel, each in a fiber of its own; a turn's one call in this fiber
        const results = yield* Effect.forEach(calls, (call, i) => {
          const id = `${turn}.${i + 1}`
          const spec = byId.get(call.name)
          if (!spec) {
            // never executed: the model learns why and may try something else
            const error = known.has(call.name)
              ? { code: "tool_not_allowed", message: `${call.name} is not allowed for this task` }
              : { code: "unknown_tool", message: `there is no tool named ${call.name}` }
            return tasks.updateStep(taskId, id, (s) => ({ ...s, status: "failed", error })).pipe(Effect.as({ error }))
          }
          return runStep(ctx, taskId, id, spec, call.arguments).pipe(
            Effect.map((output): unknown => ({ output })),
            Effect.catchTags({
              StepFailed: () =>
                Effect.sync(() => ({ error: tasks.current(taskId).task.steps.find((s) => s.id === id)?.error })),
              StepWaiting: () => Effect.succeed(waiting)
            })
          )
        }, { concurrency: calls.length > 1 ? "unbounded" : 1 })
        // some calls of the turn wait for a decision (the others ran, and keep their results): the model is asked
        // again only once every call of the turn has its result
        if (results.includes(waiting)) {
          yield* tasks.updateTask(
            taskId,
            (t) => ({ ...t, status: "waiting", waiting_for: waitingFor(t) }),
            waitingEvent
          )
          return false
        }
        const toolMessages = calls.map((call, i): ChatMessage => ({
          role: "tool",
          tool_call_id: call.id,
          content: toolResult(results[i], config.maxToolResultChars)
        }))
        yield* tasks.update(taskId, (r) => ({ ...r, transcript: [...(r.transcript ?? []), ...toolMessages] }))
        return true
      })

    /**
     * Records an LLM turn: its usage and attempts, the assistant's message, and the steps of its tool calls. A final
     * answer (a message without tool calls) ends the task in the same write, as `finish` would.
     */
    const recordTurn = (turn: number, completion: Omit<Turn, "finished_at">, message?: ChatMessage) =>
      Effect.gen(function*() {
        const at = yield* now
        const calls = message?.role === "assistant" ? message.tool_calls ?? [] : []
        const answer = message?.role === "assistant" && calls.length === 0 ? message : undefined
        yield* tasks.update(taskId, (r) => ({
          ...r,
          ...(message ? { transcript: [...(r.transcript ?? []), message] } : {}),
          task: {
            ...(answer
              ? { ...withoutWaiting(r.task), status: "succeeded" as const, output: answer.content ?? "" }
              : r.task),
            usage: {
              ...r.task.usage,
              llm_calls: r.task.usage.llm_calls + completion.attempts.length,
              prompt_tokens: r.task.usage.prompt_tokens + completion.prompt_tokens,
              completion_tokens: r.task.usage.completion_tokens + completion.completion_tokens
            },
            turns: [...(r.task.turns ?? []), { ...completion, finished_at: at }],
            steps: [
              ...r.task.steps,
              ...calls.map((call, i) => ({
                id: `${turn}.${i + 1}`,
                tool: call.name,
                status: "pending" as const,
                input: call.arguments,
                attempts: 0
              }))
            ]
          }
        }), {
          event: {
            type: "llm.completed",
            data: { llm_id: completion.llm_id, tool_calls: completion.tool_calls, attempts: completion.attempts.length }
          },
          // the exchange joins the session's context with the answer (see `finish`)
          ...(answer ? { messages: [...(tasks.current(taskId).transcript ?? []), answer] } : {})
        })
      })

    // the exchange joins the session's context for its next tasks in the same write that records the answer: a task
    // resumed after either is done, not twice
    const finish = (answer: string | null) =>
      tasks.update(
        taskId,
        (r) => ({ ...r, task: { ...withoutWaiting(r.task), status: "succeeded", output: answer ?? "" } }),
        { messages: tasks.current(taskId).transcript ?? [] }
      )

    let rechecked = false
    if (start.transcript === undefined) {
      yield* tasks.update(taskId, (r) => ({ ...r, transcript: [{ role: "user", content: r.task.input as string }] }))
    }
    while (true) {
      const record = tasks.current(taskId)
      // cancelled (or ended) meanwhile: no more turns nor calls
      if (isTerminal(record.task.status)) {
        return record.task
      }
      const transcript = record.transcript ?? []
      const last = transcript[transcript.length - 1]!
      const turn = turnsIn(transcript)
      if (last.role === "assistant" && (last.tool_calls ?? []).length > 0) {
        // the turn's calls, or those of them not done when the task was interrupted
        if (!(yield* callTools(turn, last.tool_calls!))) return tasks.current(taskId).task
        continue
      }
      if (last.role === "assistant") {
        return yield* finish(last.content)
      }
      if (turn >= maxSteps) {
        return yield* fail({ code: "max_steps", message: `no final answer after ${maxSteps} LLM turns` })
      }
      const spent = record.task.usage
      if (spent.prompt_tokens + spent.completion_tokens >= config.taskTokenBudget) {
        return yield* fail({
          code: "token_budget",
          message: `the task spent its budget of ${config.taskTokenBudget} tokens`
        })
      }
      const llmProviderId = llmProvider(llms[0]!)
      /** The task waits for a spent LLM budget (recorded before): its wake, when the budget allows, asks the model. */
      const waitForIt = Effect.gen(function*() {
        return yield* tasks.updateTask(
          taskId,
          (t) => ({ ...t, status: "waiting", waiting_for: waitingFor(t) }),
          waitingEvent
        )
      })
      // woken while this turn waits for a budget: the model is asked only once the budget allows; refused until
      // another reset, the wait is recorded anew, with its own wake at that reset
      const waited = record.task.budget_wait
      if (waited !== undefined && llmTurnWaits(record.task) && waited.turn === turn + 1) {
        const refused = yield* budgetRefusal(ctx, llmProviderId, llmBudgets)
        if (Option.isSome(refused)) {
          if (refused.value.resets_at !== waited.resets_at) {
            yield* waitForBudget(ctx, taskId, "llm", refused.value, yield* Clock.currentTimeMillis, (wait, event) =>
              tasks.updateTask(taskId, (t) => ({
                ...t,
                budget_wait: { ...wait, turn: waited.turn, llm_id: waited.llm_id }
              }), event), { step_id: `llm.${waited.turn}`, tool: `llm:${waited.llm_id}` })
          }
          return yield* tasks.updateTask(taskId, (t) => ({ ...t, status: "waiting", waiting_for: waitingFor(t) }))
        }
      }
      const result = yield* ctx.connection(llmConnectionId(tenantId, llms[0]!)).Complete({
        messages: [systemPrompt(allowed), ...history, ...transcript],
        tools: functions,
        fallbacks: llms.slice(1),
        task_id: taskId
      }).pipe(
        // an LLM turn has no side effect: asking again costs tokens at worst
        reaskOnBreak,
        Effect.retry({ schedule: backoff, while: notTaken }),
        Effect.timeoutFail({
          duration: ctx.stepTimeout,
          onTimeout: () => ({
            _tag: "StepTimedOut" as const,
            code: "timeout",
            message: "the LLM did not answer in time"
          })
        }),
        Effect.either
      )
      if (Either.isLeft(result)) {
        const e = result.left
        if (BudgetExhausted.is(e)) {
          // the model is not asked: the task waits for the budget to reset, or to be raised
          yield* waitForBudget(ctx, taskId, "llm", e, yield* Clock.currentTimeMillis, (wait, event) =>
            tasks.updateTask(taskId, (t) => ({
              ...t,
              budget_wait: { ...wait, turn: turn + 1, llm_id: llms[0]! }
            }), event), { step_id: `llm.${turn + 1}`, tool: `llm:${llms[0]!}` })
          // raised between the call and the wait's record (its notice found no wait to wake): once, asked again
          if (!rechecked && Option.isNone(yield* budgetRefusal(ctx, llmProviderId, llmBudgets))) {
            rechecked = true
            continue
          }
          return yield* waitForIt
        }
        if ("attempts" in e) {
          yield* recordTurn(turn + 1, {
            llm_id: llms[0]!,
            attempts: e.attempts,
            tool_calls: [],
            prompt_tokens: 0,
            completion_tokens: 0
          })
        }
        return yield* fail(
          "code" in e
            ? { code: e.code, message: e.message }
            : { code: "unavailable", message: `the LLM gateway could not take the call (${e._tag})` }
        )
      }
      const completion: Completion = result.right
      yield* recordTurn(
        turn + 1,
        {
          llm_id: completion.llm_id,
          attempts: completion.attempts,
          tool_calls: completion.tool_calls.map((c) =>
            c.name
          ),
          ...completion.usage
        },
        completion.tool_calls.length > 0
          ? { role: "assistant", content: completion.content, tool_calls: completion.tool_calls }
          : { role: "assistant", content: completion.content }
      )
    }
  })
