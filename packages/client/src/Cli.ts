import { type Client, makeClient } from "@altan/domain/Client"
import { AuthorizeResponse, ConnectionInfo, ProviderName } from "@altan/domain/ConnectionConfig"
import { TaskId } from "@altan/domain/Ids"
import { LlmConfig } from "@altan/domain/LlmConfig"
import { isTerminal, Task, type TaskEvent, TaskPage, TaskQuery, TaskRequest } from "@altan/domain/Task"
import { ToolDefinition, ToolSpec } from "@altan/domain/ToolDefinition"
import { reworded } from "@altan/domain/Wording"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import { taskEvents } from "./TaskEvents.js"

/**
 * The `altan` command line: tasks, tools, LLMs and connections of the tenant of `ALTAN_TOKEN`, at `ALTAN_URL`. `run`
 * answers the process's exit code: 0 when the command (a task it ran or watched) succeeded; 1 when the task failed or
 * was cancelled, or the API refused the request or could not be reached; 2 for a usage error.
 */

export const defaultUrl = "http://localhost:8080"

export const help = `altan: the command line of the Altan API

Usage: altan <command> [arguments] [options]

Commands:
  tasks run <file.json | "text">     submit a task and follow its steps until it ends: an argument ending
                                     in .json is a file holding a request body or a plan; anything else is
                                     the task's text (natural language)
  tasks get <task_id>                show a task
  tasks list                         list the tenant's tasks, newest first
  tasks watch <task_id>              follow a task's steps until it ends
  tasks cancel <task_id>             cancel a task
  tools list                         list the tenant's tools
  tools put <tool_id> <file.json>    define a custom HTTP tool (a PUT /v1/tools/{tool_id} body)
  llms put <llm_id> <file.json>      configure an LLM (a PUT /v1/llms/{llm_id} body)
  connections list                   list the tenant's connections
  connections authorize <provider>   start an OAuth2 authorization: prints the URL to open

Options:
  --json           print the API's JSON instead of a summary
  --session <id>   tasks run: the session to run in; tasks list: only this session's tasks
  --llm <id>       tasks run: the LLM of a natural-language task
  --status <s>     tasks list: only tasks in this status (queued, running, waiting, succeeded, failed, cancelled)
  --limit <n>      tasks list: at most n tasks (default 20, at most 100)
  --cursor <c>     tasks list: the page after this cursor (printed as next_cursor)
  -h, --help       this help

Environment:
  ALTAN_URL     where the API is served (default ${defaultUrl})
  ALTAN_TOKEN   the bearer token (a JWT; \`npm start\` prints a development one)

While a task runs, one line per step change goes to stderr; the task itself to stdout. A task that waits (for an
approval, a connection or a budget) says what it waits for and is followed on; Ctrl-C stops following, the task
goes on (\`altan tasks watch <task_id>\` follows it again).

Exit codes: 0 done (a task: succeeded); 1 the task failed or was cancelled, or the API refused the request or could
not be reached; 2 a usage error; 130 stopped with Ctrl-C.
`

/** A command line that does not say what to do. */
class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/** A task that ended other than succeeded: exit 1, nothing more to print. */
class TaskUnsuccessful extends Data.TaggedError("TaskUnsuccessful")<{ readonly status: string }> {}

/** The event stream of a task that could not be kept open (reconnects included): exit 1; the task goes on. */
class ConnectionLost extends Data.TaggedError("ConnectionLost")<{
  readonly taskId: TaskId
  readonly cause: HttpClientError.HttpClientError
}> {}

/** How `run` follows a task's event stream (`TaskEventsOptions`); for embedding and tests. */
export interface RunOptions {
  readonly reconnects?: number | undefined
  readonly retryDelay?: Duration.DurationInput | undefined
}

interface Args {
  readonly positional: ReadonlyArray<string>
  readonly flags: ReadonlyMap<string, string | true>
}

const valueFlags: ReadonlySet<string> = new Set(["session", "status", "limit", "cursor", "llm"])
const booleanFlags: ReadonlySet<string> = new Set(["json", "help"])

const parseArgs = (argv: ReadonlyArray<string>): Effect.Effect<Args, UsageError> =>
  Effect.suspend(() => {
    const positional: Array<string> = []
    const flags = new Map<string, string | true>()
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!
      if (arg === "-h") {
        flags.set("help", true)
      } else if (arg === "--") {
        positional.push(...argv.slice(i + 1))
        break
      } else if (arg.startsWith("--")) {
        const eq = arg.indexOf("=")
        const name = arg.slice(2, eq === -1 ? undefined : eq)
        if (booleanFlags.has(name) && eq === -1) flags.set(name, true)
        else if (valueFlags.has(name)) {
          const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
          if (value === undefined || value === "") {
            return Effect.fail(new UsageError({ message: `--${name} needs a value` }))
          }
          flags.set(name, value)
        } else return Effect.fail(new UsageError({ message: `unknown option ${arg}` }))
      } else positional.push(arg)
    }
    return Effect.succeed({ positional, flags })
  })

const flag = (args: Args, name: string): string | undefined => {
  const value = args.flags.get(name)
  return typeof value === "string" ? value : undefined
}

/** A schema's refusal as one line per issue, in the API's words: `input.steps.0.tool: is required`. */
const refusal = (what: string, error: ParseResult.ParseError): UsageError =>
  new UsageError({
    message: `${what}:\n` + ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) =>
      `  ${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${reworded(issue.message)}`
    ).join("\n")
  })

const decode = <A, I>(schema: Schema.Schema<A, I>, what: string) => (value: unknown) =>
  Schema.decodeUnknown(schema, { onExcessProperty: "error", errors: "all" })(value).pipe(
    Effect.mapError((e) => refusal(what, e))
  )

const readJson = (file: string): Effect.Effect<unknown, UsageError> =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (e) => new UsageError({ message: `cannot read ${file}: ${(e as Error).message}` })
  }).pipe(
    Effect.flatMap((text) =>
      Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (e) => new UsageError({ message: `${file} is not JSON: ${(e as Error).message}` })
      })
    )
  )

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const text = (value: unknown): string => (typeof value === "string" ? value : JSON.stringify(value))

const field = (data: unknown, name: string): string | undefined => {
  const value = isRecord(data) ? data[name] : undefined
  return value === undefined ? undefined : text(value)
}

const errorOf = (data: unknown): string => {
  const error = isRecord(data) ? data.error : undefined
  return isRecord(error) ? `${text(error.code)}: ${text(error.message)}` : "no error given"
}

const ms = (value: string | undefined) => (value === undefined ? "" : ` in ${value} ms`)

/** One progress line per event of a running task, for a person watching it. */
export const eventLine = (event: TaskEvent): string | undefined => {
  const step = `[${event.step_id ?? field(event.data, "step_id") ?? "llm"}]`
  const tool = field(event.data, "tool") ?? ""
  switch (event.type) {
    case "task.queued":
      return `task ${event.task_id} queued`
    case "task.started":
      return `task ${event.task_id} running`
    case "tool.started":
      return `${step} ${tool} running`
    case "tool.completed":
      return `${step} ${tool} succeeded${ms(field(event.data, "duration_ms"))}`
    case "tool.failed":
      return `${step} ${tool} failed: ${errorOf(event.data)}`
    case "llm.completed": {
      const calls = isRecord(event.data) && Array.isArray(event.data.tool_calls) ? event.data.tool_calls : []
      return `[llm] ${field(event.data, "llm_id") ?? "model"} ${
        calls.length > 0 ? `calls ${calls.map(text).join(", ")}` : "answers"
      }`
    }
    case "approval.requested":
      return `${step} ${tool} waits for approval until ${field(event.data, "expires_at")}: POST /v1/tasks/` +
        `${event.task_id}/steps/${event.step_id}/approve with {"input_hash": "${field(event.data, "input_hash")}"}` +
        ` (or /reject)`
    case "approval.decided":
      return `${step} ${tool} ${field(event.data, "decision")} by ${field(event.data, "decided_by") ?? "someone"}`
    case "connection.required": {
      const provider = field(event.data, "provider")
      const url = field(event.data, "authorize_url")
      return `${step} ${tool} waits for the ${provider} connection (${field(event.data, "reason")}) until ` +
        `${field(event.data, "expires_at")}: ${url ? `open ${url}` : `altan connections authorize ${provider}`}`
    }
    case "budget.exhausted":
      return `${step} waits for the ${field(event.data, "budget")} budget (${field(event.data, "used")} of ` +
        `${field(event.data, "limit")} per ${field(event.data, "period")}) until ${field(event.data, "resets_at")}`
    case "task.waiting": {
      const waits = isRecord(event.data) && Array.isArray(event.data.waiting_for) ? event.data.waiting_for : []
      return `task ${event.task_id} waiting for ${
        waits.map((w) => `${field(w, "kind")} of ${field(w, "step_id")}`).join(", ") || "something"
      } (Ctrl-C stops watching; the task goes on)`
    }
    case "task.succeeded":
    case "task.cancelled":
      return `task ${event.task_id} ${event.type.slice("task.".length)}`
    case "task.failed":
      return `task ${event.task_id} failed${isRecord(event.data) && event.data.error ? `: ${errorOf(event.data)}` : ""}`
  }
}

const pad = (s: string, width: number) => (s.length >= width ? s : s + " ".repeat(width - s.length))

/** A task for a person: its status, one line per step, its output or error, what it waits for. */
export const taskSummary = (task: Task): string => {
  const idWidth = Math.max(4, ...task.steps.map((s) => s.id.length))
  const toolWidth = Math.max(4, ...task.steps.map((s) => s.tool.length))
  const lines = [
    `task ${task.task_id} ${task.status} (session ${task.session_id}, ${task.steps.length} step${
      task.steps.length === 1 ? "" : "s"
    }, ${task.usage.llm_calls} LLM call${task.usage.llm_calls === 1 ? "" : "s"})`,
    ...task.steps.map((s) =>
      `  ${pad(s.id, idWidth)}  ${pad(s.tool, toolWidth)}  ${s.status}${
        s.duration_ms !== undefined ? ` in ${s.duration_ms} ms` : ""
      }${s.error ? `: ${s.error.code}: ${s.error.message}` : ""}`
    ),
    ...(task.waiting_for ?? []).map((w) =>
      `waiting for ${w.kind} of step ${w.step_id} (${w.tool})${
        w.provider ? `: connection ${w.provider}${w.authorize_url ? `, open ${w.authorize_url}` : ""}` : ""
      }${w.budget ? `: budget ${w.budget} until ${w.resets_at}` : ""}${
        w.input_hash ? `: input_hash ${w.input_hash}` : ""
      }`
    ),
    ...(task.output !== undefined ? [`output: ${text(task.output)}`] : []),
    ...(task.error ? [`error: ${task.error.code}: ${task.error.message}`] : [])
  ]
  return lines.join("\n")
}

interface Context {
  readonly args: Args
  readonly api: Client
  readonly baseUrl: string
  readonly token: string
  readonly json: boolean
  readonly options: RunOptions
}

const print = (line: string) => Effect.sync(() => process.stdout.write(line.endsWith("\n") ? line : `${line}\n`))
const progress = (line: string) => Effect.sync(() => process.stderr.write(`${line}\n`))

/** A value as the API's JSON: encoded with its schema, as the API sent it. */
const asJson = <A, I>(schema: Schema.Schema<A, I>, value: A) =>
  JSON.stringify(Schema.encodeSync(schema)(value), null, 2)

const printTask = (ctx: Context, task: Task) => print(ctx.json ? asJson(Task, task) : taskSummary(task))

const exactly = (ctx: Context, count: number, usage: string) =>
  ctx.args.positional.length - 2 === count
    ? Effect.succeed(ctx.args.positional.slice(2))
    : Effect.fail(new UsageError({ message: `usage: altan ${usage}` }))

const taskIdOf = (value: string) => decode(TaskId, "not a task id")(value)

/** Follows a task's events until it ends, a line each on stderr; then the task, and whether it succeeded. */
const follow = (ctx: Context, taskId: TaskId) =>
  Effect.gen(function*() {
    const stop = () => {
      process.stderr.write(
        `\nstopped watching; task ${taskId} goes on (altan tasks watch ${taskId}, altan tasks cancel ${taskId})\n`
      )
      process.exit(130)
    }
    // `on`, not `once`: a second Ctrl-C (or the launcher's forwarded one) finds it still there
    process.on("SIGINT", stop)
    yield* taskEvents({ baseUrl: ctx.baseUrl, token: ctx.token, ...ctx.options }, taskId).pipe(
      Stream.runForEach((event) => {
        const line = eventLine(event)
        return line === undefined ? Effect.void : progress(line)
      }),
      Effect.catchIf(HttpClientError.isHttpClientError, (cause) => new ConnectionLost({ taskId, cause })),
      Effect.ensuring(Effect.sync(() => process.off("SIGINT", stop)))
    )
    const task = yield* ctx.api.tasks.get({ path: { task_id: taskId } })
    yield* printTask(ctx, task)
    if (!isTerminal(task.status)) {
      yield* progress(`the event stream ended before the task did; follow it again: altan tasks watch ${taskId}`)
      return yield* new TaskUnsuccessful({ status: task.status })
    }
    if (task.status !== "succeeded") return yield* new TaskUnsuccessful({ status: task.status })
  })

/**
 * `tasks run`: an argument ending in `.json` is a file holding a request body (or a plan), which must be a readable
 * regular file; anything else is the task's text, even if a file of that name exists.
 */
const tasksRun = (ctx: Context) =>
  Effect.gen(function*() {
    const [source] = yield* exactly(ctx, 1, `tasks run <file.json | "text"> [--session ID] [--llm ID] [--json]`)
    const fromFile = source!.endsWith(".json")
    if (fromFile && fs.statSync(source!, { throwIfNoEntry: false })?.isFile() === false) {
      return yield* new UsageError({ message: `${source} is not a file: tasks run reads a .json file or takes text` })
    }
    const body: unknown = fromFile ? yield* readJson(source!) : { input: source }
    const request = isRecord(body) && !("input" in body) && "steps" in body ? { input: body } : body
    if (!isRecord(request)) {
      return yield* new UsageError({
        message: `${source}: a task request ({"input": ...}) or a plan ({"steps": [...]})`
      })
    }
    const session = flag(ctx.args, "session")
    const llm = flag(ctx.args, "llm")
    const payload = yield* decode(TaskRequest, `${fromFile ? source : "the task"} is not a task request`)({
      ...request,
      ...(session !== undefined ? { session_id: session } : {}),
      ...(llm !== undefined ? { llm_id: llm } : {}),
      mode: "async"
    })
    const accepted = yield* ctx.api.tasks.create({ payload })
    yield* progress(`task ${accepted.task_id} submitted (session ${accepted.session_id})`)
    yield* follow(ctx, accepted.task_id)
  })

const tasksGet = (ctx: Context) =>
  Effect.gen(function*() {
    const [id] = yield* exactly(ctx, 1, "tasks get <task_id> [--json]")
    yield* printTask(ctx, yield* ctx.api.tasks.get({ path: { task_id: yield* taskIdOf(id!) } }))
  })

const tasksWatch = (ctx: Context) =>
  Effect.gen(function*() {
    const [id] = yield* exactly(ctx, 1, "tasks watch <task_id> [--json]")
    const taskId = yield* taskIdOf(id!)
    // a task that is not there, or a server that is not, is said at once (the event stream would retry the latter)
    yield* ctx.api.tasks.get({ path: { task_id: taskId } })
    yield* follow(ctx, taskId)
  })

const tasksCancel = (ctx: Context) =>
  Effect.gen(function*() {
    const [id] = yield* exactly(ctx, 1, "tasks cancel <task_id> [--json]")
    yield* printTask(ctx, yield* ctx.api.tasks.cancel({ path: { task_id: yield* taskIdOf(id!) } }))
  })

const tasksList = (ctx: Context) =>
  Effect.gen(function*() {
    yield* exactly(ctx, 0, "tasks list [--session ID] [--status S] [--limit N] [--cursor C] [--json]")
    const query = Object.fromEntries(
      ["session_id", "status", "limit", "cursor"].flatMap((name) => {
        const value = flag(ctx.args, name === "session_id" ? "session" : name)
        return value === undefined ? [] : [[name, value]]
      })
    )
    const urlParams = yield* decode(TaskQuery, "not a task query")(query)
    const page = yield* ctx.api.tasks.list({ urlParams })
    if (ctx.json) return yield* print(asJson(TaskPage, page))
    if (page.tasks.length === 0) yield* print("no tasks")
    const idWidth = Math.max(4, ...page.tasks.map((t) => t.task_id.length))
    for (const t of page.tasks) {
      yield* print(
        `${pad(t.task_id, idWidth)}  ${pad(t.status, 9)}  ${pad(t.kind, 4)}  ${t.step_count} step${
          t.step_count === 1 ? " " : "s"
        }  ${t.created_at}${t.error ? `  ${t.error.code}` : ""}`
      )
    }
    if (page.next_cursor !== undefined) yield* print(`more: --cursor ${page.next_cursor}`)
  })

const toolsList = (ctx: Context) =>
  Effect.gen(function*() {
    yield* exactly(ctx, 0, "tools list [--json]")
    const tools = yield* ctx.api.tools.list()
    if (ctx.json) return yield* print(asJson(Schema.Array(ToolSpec), tools))
    const width = Math.max(4, ...tools.map((t) => t.tool_id.length))
    for (const t of tools) {
      const description = t.description.split("\n")[0]!
      yield* print(
        `${pad(t.tool_id, width)}  ${t.builtin ? "built-in" : "custom  "}  ${
          description.length > 80 ? `${description.slice(0, 77)}...` : description
        }`
      )
    }
  })

const toolsPut = (ctx: Context) =>
  Effect.gen(function*() {
    const [toolId, file] = yield* exactly(ctx, 2, "tools put <tool_id> <file.json> [--json]")
    const body = yield* readJson(file!)
    const payload = yield* decode(ToolDefinition, `${file} is not a tool definition`)(
      isRecord(body) && body.tool_id === undefined ? { ...body, tool_id: toolId } : body
    )
    if (payload.tool_id !== toolId) {
      return yield* new UsageError({ message: `${file} defines tool_id "${payload.tool_id}", not "${toolId}"` })
    }
    const spec = yield* ctx.api.tools.put({ path: { tool_id: payload.tool_id }, payload })
    yield* print(ctx.json ? asJson(ToolSpec, spec) : `tool ${spec.tool_id} saved`)
  })

const llmsPut = (ctx: Context) =>
  Effect.gen(function*() {
    const [llmId, file] = yield* exactly(ctx, 2, "llms put <llm_id> <file.json> [--json]")
    const body = yield* readJson(file!)
    const payload = yield* decode(LlmConfig, `${file} is not an LLM configuration`)(
      isRecord(body) && body.llm_id === undefined ? { ...body, llm_id: llmId } : body
    )
    const saved = yield* ctx.api.llms.put({ path: { llm_id: llmId! }, payload })
    yield* print(ctx.json ? asJson(LlmConfig, saved) : `llm ${saved.llm_id} saved`)
  })

const connectionsList = (ctx: Context) =>
  Effect.gen(function*() {
    yield* exactly(ctx, 0, "connections list [--json]")
    const connections = yield* ctx.api.connections.list()
    if (ctx.json) return yield* print(asJson(Schema.Array(ConnectionInfo), connections))
    if (connections.length === 0) yield* print("no connections")
    const width = Math.max(8, ...connections.map((c) => c.provider.length))
    for (const c of connections) {
      yield* print(
        `${pad(c.provider, width)}  ${pad(c.type, 7)}  ${c.status}${c.expires_at ? `  expires ${c.expires_at}` : ""}`
      )
    }
  })

const connectionsAuthorize = (ctx: Context) =>
  Effect.gen(function*() {
    const [name] = yield* exactly(ctx, 1, "connections authorize <provider> [--json]")
    const provider = yield* decode(ProviderName, "not a provider name")(name)
    const started = yield* ctx.api.connections.authorize({ path: { provider } })
    yield* print(
      ctx.json
        ? asJson(AuthorizeResponse, started)
        : `Open this URL to authorize ${provider} (valid until ${started.expires_at}):\n${started.authorize_url}`
    )
  })

const commands: Record<string, (ctx: Context) => Effect.Effect<void, unknown, HttpClient.HttpClient>> = {
  "tasks run": tasksRun,
  "tasks get": tasksGet,
  "tasks list": tasksList,
  "tasks watch": tasksWatch,
  "tasks cancel": tasksCancel,
  "tools list": toolsList,
  "tools put": toolsPut,
  "llms put": llmsPut,
  "connections list": connectionsList,
  "connections authorize": connectionsAuthorize
}

const causeText = (error: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = error
  while (current instanceof Error && parts.length < 4) {
    const code = (current as { code?: unknown }).code
    parts.push(typeof code === "string" ? `${current.message} (${code})` : current.message)
    current = current.cause
  }
  return parts.filter((p) => p !== "").join(": ")
}

const ApiEnvelope = Schema.Struct({
  error: Schema.Struct({ code: Schema.String, message: Schema.String, details: Schema.optional(Schema.Unknown) })
})

/** What went wrong, in a line or two for the person at the terminal, and the exit code. */
const explain = (error: unknown, baseUrl: string): Effect.Effect<readonly [string, number]> =>
  Effect.gen(function*() {
    if (error instanceof UsageError) return [`${error.message}\n(altan --help for usage)`, 2] as const
    if (error instanceof TaskUnsuccessful) return ["", 1] as const
    if (error instanceof ConnectionLost) {
      const why = error.cause._tag === "ResponseError" && error.cause.reason !== "Decode"
        ? `HTTP ${error.cause.response.status}`
        : causeText(error.cause.cause) || error.cause.message
      return [
        `connection to Altan at ${baseUrl} lost while following task ${error.taskId}: ${why}; the task goes on ` +
        `(altan tasks watch ${error.taskId} follows it again)`,
        1
      ] as const
    }
    if (HttpClientError.isHttpClientError(error)) {
      if (error._tag === "RequestError") {
        return [`cannot reach Altan at ${baseUrl}: ${causeText(error.cause)} (is it running? ALTAN_URL sets where)`, 1]
      }
      const status = error.response.status
      const body = yield* Effect.orElseSucceed(error.response.json, () => undefined)
      const envelope = Schema.decodeUnknownOption(ApiEnvelope)(body)
      return envelope._tag === "Some"
        ? [`error: ${envelope.value.error.code}: ${envelope.value.error.message} (HTTP ${status})`, 1]
        : [`unexpected answer from ${baseUrl}: HTTP ${status}${body !== undefined ? ` ${text(body)}` : ""}`, 1]
    }
    if (ParseResult.isParseError(error)) return [`unexpected answer from ${baseUrl}: ${error.message}`, 1]
    if (isRecord(error) && typeof error.code === "string" && typeof error.message === "string") {
      const fieldName = isRecord(error.details) ? error.details.field : undefined
      const hint = error._tag === "Unauthorized" ? " (check ALTAN_TOKEN)" : ""
      return [
        `error: ${error.code}: ${error.message}${typeof fieldName === "string" ? ` (field ${fieldName})` : ""}${hint}`,
        1
      ]
    }
    return [`unexpected failure: ${causeText(error) || String(error)}`, 1]
  })

/** Runs `altan <argv>` with `env`'s `ALTAN_URL` and `ALTAN_TOKEN`; answers the exit code. */
export const run = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
  options: RunOptions = {}
): Promise<number> => {
  const baseUrl = (env.ALTAN_URL || defaultUrl).replace(/\/+$/, "")
  const program = Effect.gen(function*() {
    const args = yield* parseArgs(argv)
    const name = args.positional.slice(0, 2).join(" ")
    if (args.flags.has("help") || args.positional.length === 0) {
      yield* print(help)
      return 0
    }
    const command = commands[name]
    if (command === undefined) {
      return yield* new UsageError({ message: `unknown command: altan ${args.positional.join(" ")}` })
    }
    const token = env.ALTAN_TOKEN
    if (token === undefined || token === "") {
      return yield* new UsageError({
        message: "ALTAN_TOKEN is not set: export ALTAN_TOKEN=<a JWT of your tenant> (npm start prints a " +
          "development token)"
      })
    }
    const api = yield* makeClient({ baseUrl, token })
    yield* command({ args, api, baseUrl, token, json: args.flags.has("json"), options })
    return 0
  })
  return program.pipe(
    Effect.catchAll((error) =>
      Effect.flatMap(
        explain(error, baseUrl),
        ([message, code]) =>
          Effect.as(message === "" ? Effect.void : Effect.sync(() => process.stderr.write(`${message}\n`)), code)
      )
    ),
    Effect.provide(FetchHttpClient.layer),
    Effect.runPromise
  )
}
