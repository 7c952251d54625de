import { taskEvents, type TaskEventsOptions } from "@altan/client"
import { run } from "@altan/client/Cli"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { afterEach, describe, expect, it, vi } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { all, closeServers, serve, sse, task, taskId, writeThenDrop } from "./fakeApi.js"
import { freePort } from "./runtime.js"

/**
 * `taskEvents` (and `altan tasks watch`) against a loopback server of the test's that plays the API's event stream
 * and misbehaves on purpose: a socket destroyed mid-stream, a 503, a refused connection, error frames (`fakeApi.ts`).
 */

afterEach(closeServers)

const collect = (options: Partial<TaskEventsOptions> & { baseUrl: string }) =>
  Effect.runPromise(
    taskEvents({ token: "t", retryDelay: "10 millis", ...options }, taskId).pipe(
      Stream.runCollect,
      Effect.map((chunk) => Chunk.toReadonlyArray(chunk).map((e) => `${e.id} ${e.type}`)),
      Effect.provide(FetchHttpClient.layer)
    )
  )

const failure = (options: Partial<TaskEventsOptions> & { baseUrl: string }) =>
  Effect.runPromise(
    taskEvents({ token: "t", retryDelay: "10 millis", ...options }, taskId).pipe(
      Stream.runDrain,
      Effect.flip,
      Effect.provide(FetchHttpClient.layer)
    )
  )

const expected = ["1 task.queued", "2 task.started", "3 tool.started", "4 tool.completed", "5 task.succeeded"]

describe("taskEvents when the connection fails", () => {
  it("resumes with Last-Event-ID after the socket is destroyed mid-stream; no event missed or repeated", async () => {
    const { url, seen } = await serve((_req, res, attempt) => {
      if (attempt === 0) return writeThenDrop(res, all.slice(0, 2))
      sse(res)
      res.end(all.slice(Number(seen[attempt]!.lastEventId)).join(""))
    })
    expect(await collect({ baseUrl: url })).toEqual(expected)
    expect(seen).toEqual([{ lastEventId: undefined }, { lastEventId: "2" }])
  })

  it("ends with the terminal event, though the server keeps the connection open", async () => {
    const { url, seen } = await serve((_req, res) => {
      sse(res)
      res.write(all.join(""))
    })
    expect(await collect({ baseUrl: url })).toEqual(expected)
    expect(seen).toHaveLength(1)
  })

  it("retries a 503 (the server restarting), and resumes from `after`", async () => {
    const { url, seen } = await serve((_req, res, attempt) => {
      if (attempt === 0) {
        res.writeHead(503, { "content-type": "application/json" })
        return res.end(JSON.stringify({ error: { code: "unavailable", message: "restarting" } }))
      }
      sse(res)
      res.end(all.slice(Number(seen[attempt]!.lastEventId ?? 0)).join(""))
    })
    expect(await collect({ baseUrl: url, after: "1" })).toEqual(expected.slice(1))
    expect(seen).toEqual([{ lastEventId: "1" }, { lastEventId: "1" }])
  })

  it("retries a refused connection until the server is up", async () => {
    const port = await freePort()
    const events = collect({ baseUrl: `http://127.0.0.1:${port}`, retryDelay: "50 millis" })
    await new Promise((resolve) => setTimeout(resolve, 150))
    const { seen } = await serve((_req, res) => {
      sse(res)
      res.end(all.join(""))
    }, { port })
    expect(await events).toEqual(expected)
    expect(seen).toHaveLength(1)
  })

  it("starts counting failures again after each event: a long watch outlives many drops", async () => {
    // every connection carries one event and is then cut: 5 drops with a budget of 2 in a row
    const { url, seen } = await serve((_req, res, attempt) => writeThenDrop(res, [all[attempt]!]))
    expect(await collect({ baseUrl: url, reconnects: 2 })).toEqual(expected)
    expect(seen.map((s) => s.lastEventId)).toEqual([undefined, "1", "2", "3", "4"])
  })

  it("gives up after `reconnects` failed attempts in a row without an event, with the last error", async () => {
    const unavailable = await serve((_req, res) => {
      res.writeHead(503, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: { code: "unavailable", message: "storage down" } }))
    })
    expect(await failure({ baseUrl: unavailable.url, reconnects: 3 })).toMatchObject({
      _tag: "Unavailable",
      code: "unavailable",
      message: "storage down"
    })
    expect(unavailable.seen).toHaveLength(4)
    const dropped = await serve((_req, res) => writeThenDrop(res, []))
    expect(await failure({ baseUrl: dropped.url, reconnects: 2 })).toMatchObject({
      _tag: "ResponseError",
      reason: "Decode"
    })
    expect(dropped.seen).toHaveLength(3)
  })

  it("does not retry an answer about the task or the token; error frames keep the API's error class", async () => {
    const statuses = await serve((_req, res, attempt) => {
      const [status, code] = ([[401, "invalid_token"], [403, "forbidden"], [404, "not_found"]] as const)[attempt]!
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: { code, message: `${code}!` } }))
    })
    expect(await failure({ baseUrl: statuses.url })).toMatchObject({ _tag: "Unauthorized", code: "invalid_token" })
    expect(await failure({ baseUrl: statuses.url })).toMatchObject({ _tag: "Forbidden", code: "forbidden" })
    expect(await failure({ baseUrl: statuses.url })).toMatchObject({ _tag: "NotFound", code: "not_found" })
    expect(statuses.seen).toHaveLength(3)

    const frames = await serve((_req, res, attempt) => {
      if (attempt === 3) {
        res.writeHead(404, { "content-type": "application/json" })
        return res.end(JSON.stringify({ error: { code: "not_found", message: "gone" } }))
      }
      const code = ["forbidden", "invalid_token", "rate_limited"][attempt]!
      sse(res)
      res.end(
        `${attempt < 2 ? all[0] : ""}event: error\ndata: ${JSON.stringify({ error: { code, message: code } })}\n\n`
      )
    })
    expect(await failure({ baseUrl: frames.url })).toMatchObject({ _tag: "Forbidden", code: "forbidden" })
    expect(await failure({ baseUrl: frames.url })).toMatchObject({ _tag: "Unauthorized", code: "invalid_token" })
    // a rate limit is worth another try: the next connection is answered 404
    expect(await failure({ baseUrl: frames.url })).toMatchObject({ _tag: "NotFound", message: "gone" })
    expect(frames.seen).toHaveLength(4)
  })
})

describe("altan tasks watch when the connection is lost", () => {
  it("says the connection was lost (not an unexpected HTTP 200) and that the task goes on; exit 1", async () => {
    // the task is there, but every event stream is cut before its first event
    const { url, seen } = await serve((_req, res) => writeThenDrop(res, []), { task })
    const stderr: Array<string> = []
    const write = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
      stderr.push(String(chunk))
      return true
    })
    let code: number
    try {
      code = await run(["tasks", "watch", taskId], { ALTAN_URL: url, ALTAN_TOKEN: "t" }, {
        reconnects: 2,
        retryDelay: "10 millis"
      })
    } finally {
      write.mockRestore()
    }
    expect(code).toBe(1)
    expect(seen).toHaveLength(3)
    const said = stderr.join("")
    expect(said).toMatch(
      new RegExp(
        `^connection to Altan at ${url} lost while following task s\\.t: .+; the task goes on \\(altan tasks watch s\\.t follows it again\\)\n$`
      )
    )
    expect(said).not.toContain("unexpected answer")
  })
})
