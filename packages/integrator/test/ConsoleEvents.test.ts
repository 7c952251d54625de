import { afterEach, describe, expect, it } from "@effect/vitest"
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http"
import { js } from "../src/console/script.js"

// The console's event-stream follower (browser JavaScript, run here in Node, whose fetch and streams it uses) against a
// loopback server: error frames are not events, and end it or count as failures; reconnects resume where they left.

type Follow = (taskId: string, signal: AbortSignal, onEvent: (event: unknown) => void) => Promise<void>

/** `followEvents` out of the console's script, its requests sent to `base`, its backoff shortened to 1 ms. */
const followerFor = (base: string): Follow => {
  const start = js.indexOf("class ApiError")
  const end = js.indexOf("// ---- tasks: the live list")
  const shortTimers = (fn: () => void, ms: number) => setTimeout(fn, ms >= 45_000 ? ms : 1)
  return new Function("state", "fetch", "notice", "setTimeout", `${js.slice(start, end)}; return followEvents`)(
    { token: "tok" },
    (path: string, init: RequestInit) => fetch(base + path, init),
    () => undefined,
    shortTimers
  )
}

let server: Server | undefined
afterEach(() => {
  server?.closeAllConnections()
  server?.close()
})
const serve = async (answer: (n: number, headers: IncomingHttpHeaders, res: ServerResponse) => void) => {
  let n = 0
  server = createServer((req, res) => answer(++n, req.headers, res))
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}
const sse = (res: ServerResponse) => res.writeHead(200, { "content-type": "text/event-stream" })
const frame = (id: number, type: string) => `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify({ type, n: id })}\n\n`

describe("the console's event stream", () => {
  /** Follows a stream whose every connection answers an error frame of `code`: how many it made, what it passed on. */
  const followErrors = async (code: string) => {
    let connections = 0
    const base = await serve((n, _, res) => {
      connections = n
      sse(res)
      res.end(`event: error\ndata: {"error":{"code":"${code}","message":"no"}}\n\n`)
    })
    const events: Array<unknown> = []
    await followerFor(base)("t.x", new AbortController().signal, (e) => events.push(e))
    return { connections, events }
  }

  it("stops at an error frame another connection cannot help (not_found), passing nothing on", async () => {
    expect(await followErrors("not_found")).toEqual({ connections: 1, events: [] })
  })

  it("gives up after 8 connections in a row that brought no event (an error frame each), not forever", async () => {
    expect(await followErrors("unavailable")).toEqual({ connections: 8, events: [] })
  })

  it("resumes a dropped stream with Last-Event-ID, each event once, and ends at the terminal event", async () => {
    const lastIds: Array<string | undefined> = []
    const base = await serve((n, headers, res) => {
      lastIds.push(headers["last-event-id"] as string | undefined)
      sse(res)
      if (n === 1) {
        res.write(frame(1, "task.started") + frame(2, "tool.started"))
        setTimeout(() => res.destroy(), 20)
      } else {
        res.write(frame(3, "tool.completed") + frame(4, "task.succeeded"))
      }
    })
    const events: Array<{ n: number }> = []
    await followerFor(base)("t.x", new AbortController().signal, (e) => events.push(e as { n: number }))
    expect(events.map((e) => e.n)).toEqual([1, 2, 3, 4])
    expect(lastIds).toEqual([undefined, "2"])
  })
})
