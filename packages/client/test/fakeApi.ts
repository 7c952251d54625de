import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A loopback stand-in for the API's event stream, for tests that make it misbehave on purpose (a socket destroyed
 * mid-stream, a 503, an error frame): `serve(handler)` answers `GET /v1/tasks/s.t/events` with the test's handler.
 */

export const taskId = "s.t"

export const frame = (id: number, type: string) =>
  `id: ${id}\nevent: ${type}\ndata: ${
    JSON.stringify({ id: String(id), type, task_id: taskId, at: "2026-01-01T00:00:00.000Z" })
  }\n\n`

/** The events of a task that succeeds, as frames (ids 1 to 5). */
export const all = ["task.queued", "task.started", "tool.started", "tool.completed", "task.succeeded"].map((type, i) =>
  frame(i + 1, type)
)

/** What a request saw: its `Last-Event-ID` (undefined without one). */
export interface Seen {
  readonly lastEventId: string | undefined
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, attempt: number) => void

const servers: Array<http.Server> = []

/** Closes the servers `serve` started (an `afterEach` of the tests). */
export const closeServers = async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
}

/**
 * A loopback server answering the events route with `handler` (its `attempt`: 0, 1, ...), and `GET /v1/tasks/s.t`
 * with `task`; what each events request saw.
 */
export const serve = async (handler: Handler, { port = 0, task }: { port?: number; task?: unknown } = {}) => {
  const seen: Array<Seen> = []
  const server = http.createServer((req, res) => {
    if (task !== undefined && req.url === `/v1/tasks/${taskId}`) {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(task))
      return
    }
    if (req.url !== `/v1/tasks/${taskId}/events` || req.headers.authorization !== "Bearer t") {
      res.writeHead(500).end(`unexpected ${req.method} ${req.url}`)
      return
    }
    const lastEventId = req.headers["last-event-id"]
    seen.push({ lastEventId: typeof lastEventId === "string" ? lastEventId : undefined })
    handler(req, res, seen.length - 1)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

export const sse = (res: http.ServerResponse) =>
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })

/** Writes `frames`, then destroys the socket once they went out (no clean end of the chunked body). */
export const writeThenDrop = (res: http.ServerResponse, frames: ReadonlyArray<string>) => {
  sse(res)
  res.write(frames.join(""), () => setTimeout(() => res.socket?.destroy(), 20))
}

/** A running task as `GET /v1/tasks/s.t` answers it. */
export const task = {
  task_id: taskId,
  session_id: "s",
  status: "running",
  input: "say hello",
  steps: [],
  usage: { llm_calls: 0, tool_calls: 0, prompt_tokens: 0, completion_tokens: 0 },
  created_at: "2026-01-01T00:00:00.000Z",
  updated_at: "2026-01-01T00:00:00.000Z"
}
