import { Api } from "@altan/domain/Api"
import { CurrentPrincipal } from "@altan/domain/Principal"
import { isTerminal, Task } from "@altan/domain/Task"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { Tasks } from "./Tasks.js"

const encodeTask = HttpServerResponse.schemaJson(Task)

/** `/v1/tasks`: submit (200 once finished, 202 while it runs), read, cancel, and the task's events as SSE. */
export const TasksLive = HttpApiBuilder.group(Api, "tasks", (handlers) =>
  Effect.gen(function*() {
    const tasks = yield* Tasks
    return handlers
      .handle("create", ({ payload }) =>
        Effect.gen(function*() {
          const task = yield* tasks.submit(yield* CurrentPrincipal, payload)
          if (isTerminal(task.status)) return task
          return yield* Effect.orDie(encodeTask(task, { status: 202 }))
        }))
      .handle("list", ({ urlParams }) =>
        Effect.flatMap(CurrentPrincipal, (principal) => tasks.list(principal, urlParams)))
      .handle("get", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) => tasks.get(principal, path.task_id)))
      .handle("events", ({ headers, path }) =>
        Effect.gen(function*() {
          const principal = yield* CurrentPrincipal
          const events = (yield* tasks.events(principal, path.task_id, headers["last-event-id"])).pipe(
            Stream.map((e) => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`),
            // comments keep idle connections open through proxies; they stop with the events
            Stream.merge(Stream.tick("15 seconds").pipe(Stream.map(() => ": keep-alive\n\n")), {
              haltStrategy: "left"
            }),
            Stream.catchAll((e) =>
              Stream.make(`event: error\ndata: ${JSON.stringify({ error: { code: e.code, message: e.message } })}\n\n`)
            ),
            Stream.encodeText
          )
          return HttpServerResponse.stream(events, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })
        }))
      .handle("cancel", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          tasks.cancel(principal, path.task_id)))
      .handle("approve", ({ path, payload }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          tasks.decide(principal, path.task_id, path.step_id, { _tag: "Approve", ...payload })))
      .handle("reject", ({ path, payload }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          tasks.decide(principal, path.task_id, path.step_id, { _tag: "Reject", ...payload })))
  }))

/** `/v1/sessions`: a session's tasks, and clearing its context. */
export const SessionsLive = HttpApiBuilder.group(Api, "sessions", (handlers) =>
  Effect.gen(function*() {
    const tasks = yield* Tasks
    return handlers
      .handle("get", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) => tasks.getSession(principal, path.session_id)))
      .handle("reset", ({ path }) =>
        Effect.flatMap(CurrentPrincipal, (principal) =>
          tasks.resetSession(principal, path.session_id)))
  }))

/** `/v1/approvals`: the calls waiting for a decision that the caller may make. */
export const ApprovalsLive = HttpApiBuilder.group(Api, "approvals", (handlers) =>
  Effect.gen(function*() {
    const tasks = yield* Tasks
    return handlers.handle("list", ({ urlParams }) =>
      Effect.flatMap(CurrentPrincipal, (principal) =>
        tasks.pendingApprovals(principal, urlParams.cursor, urlParams.limit ?? 50)))
  }))
