import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** Tuning of the Agent Service. */
export class AgentConfig extends Context.Tag("@altan/agent/AgentConfig")<AgentConfig, {
  /** Tool calls of one task that may run at once (independent plan steps, one LLM turn's calls). */
  readonly maxParallelToolCalls: number
  /**
   * An idle session is passivated after this long; its state is already in the store. A session that ran a task
   * holds ~50 KB until then, and a task without a `session_id` gets a new session: a runner holds about its rate of
   * such tasks times this (plus up to 30 s) of them.
   */
  readonly sessionMaxIdleTime: Duration.Duration
  /** LLM turns a natural-language task may take unless it says otherwise. */
  readonly maxSteps: number
  /** Tokens (prompt + completion) a task may spend before it stops. */
  readonly taskTokenBudget: number
  /** Characters of session history sent to the model; older turns are dropped first. */
  readonly historyBudgetChars: number
  /** Characters of one tool result given back to the model. */
  readonly maxToolResultChars: number
  /**
   * How long one step (a tool call, retries and rate-limit waits included) or one LLM turn may take before it fails
   * with `timeout`: no task waits forever on a call.
   */
  readonly stepTimeout: Duration.Duration
}>() {}

export const defaults: AgentConfig["Type"] = {
  maxParallelToolCalls: 8,
  // short: at 15 minutes, 50 one-off tasks a second held ~45,000 sessions (~2.3 GB) in a runner; one back after it
  // is activated again from the store (a session holding writes to rewrite after a Redis outage stays: SessionTasks)
  sessionMaxIdleTime: Duration.minutes(1),
  maxSteps: 10,
  taskTokenBudget: 200_000,
  historyBudgetChars: 100_000,
  maxToolResultChars: 16_000,
  stepTimeout: Duration.minutes(10)
}

export const layer = (options?: Partial<AgentConfig["Type"]>): Layer.Layer<AgentConfig> =>
  Layer.succeed(AgentConfig, { ...defaults, ...options })

/** `AGENT_MAX_PARALLEL_TOOL_CALLS`, `SESSION_MAX_IDLE_TIME` (e.g. `1 minute`). */
export const config: Config.Config<AgentConfig["Type"]> = Config.all({
  maxParallelToolCalls: Config.integer("AGENT_MAX_PARALLEL_TOOL_CALLS").pipe(
    Config.withDefault(defaults.maxParallelToolCalls),
    Config.withDescription("Tool calls of one task that may run at once.")
  ),
  sessionMaxIdleTime: Config.duration("SESSION_MAX_IDLE_TIME").pipe(
    Config.withDefault(defaults.sessionMaxIdleTime),
    Config.withDescription("Idle time after which a session leaves memory.")
  ),
  maxSteps: Config.integer("AGENT_MAX_STEPS").pipe(Config.withDefault(defaults.maxSteps)),
  taskTokenBudget: Config.integer("AGENT_TASK_TOKEN_BUDGET").pipe(Config.withDefault(defaults.taskTokenBudget)),
  historyBudgetChars: Config.integer("AGENT_HISTORY_BUDGET_CHARS").pipe(
    Config.withDefault(defaults.historyBudgetChars)
  ),
  maxToolResultChars: Config.integer("AGENT_MAX_TOOL_RESULT_CHARS").pipe(
    Config.withDefault(defaults.maxToolResultChars)
  ),
  stepTimeout: Config.duration("AGENT_STEP_TIMEOUT").pipe(
    Config.withDefault(defaults.stepTimeout),
    Config.withDescription("How long one step or LLM turn may take before it fails with timeout.")
  )
})

export const layerConfig: Layer.Layer<AgentConfig, ConfigError.ConfigError> = Layer.effect(
  AgentConfig,
  Effect.gen(function*() {
    return yield* config
  })
)
