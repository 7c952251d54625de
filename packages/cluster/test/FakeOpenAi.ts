import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"

/** What the fake received for one chat-completions request. */
export interface Received {
  readonly at: number
  readonly path: string
  readonly authorization: string | undefined
  /** The W3C trace context the request carried, if any. */
  readonly traceparent: string | undefined
  readonly body: any
}

export type Reply =
  | { readonly kind: "answer"; readonly content: string }
  | { readonly kind: "tools"; readonly calls: ReadonlyArray<{ readonly name: string; readonly arguments: string }> }
  | {
    readonly kind: "status"
    readonly status: number
    readonly headers?: Record<string, string>
    readonly body?: unknown
  }
  | { readonly kind: "hang" }
  | { readonly kind: "huge"; readonly bytes: number }
  | ((request: Received) => Reply)

/**
 * An OpenAI-compatible chat-completions server on loopback, scripted per test: each request takes
 * the next reply from the script (the last one repeats). It answers in the real protocol, tool calls
 * included, so the `openai` SDK parses it as it would the real service.
 */
export const startFakeOpenAi = async () => {
  let script: Array<Reply> = []
  const received: Array<Received> = []
  let counter = 0
  const hanging = new Set<ServerResponse>()

  const completion = (message: object, finish: string) => ({
    id: `chatcmpl-${++counter}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: "fake-model",
    choices: [{ index: 0, message: { role: "assistant", ...message }, finish_reason: finish, logprobs: null }],
    usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }
  })

  const respond = (reply: Reply, request: Received, res: ServerResponse): void => {
    if (typeof reply === "function") return respond(reply(request), request, res)
    switch (reply.kind) {
      case "answer":
        return void res.writeHead(200, { "content-type": "application/json" })
          .end(JSON.stringify(completion({ content: reply.content }, "stop")))
      case "tools":
        return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(completion({
          content: null,
          tool_calls: reply.calls.map((c, i) => ({
            id: `call_${counter}_${i}`,
            type: "function",
            function: { name: c.name, arguments: c.arguments }
          }))
        }, "tool_calls")))
      case "status":
        return void res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers })
          .end(JSON.stringify(reply.body ?? { error: { message: `status ${reply.status}`, type: "server_error" } }))
      case "hang":
        hanging.add(res)
        res.on("close", () => hanging.delete(res))
        return
      case "huge": {
        res.writeHead(200, { "content-type": "application/json" })
        const chunk = "x".repeat(64 * 1024)
        res.write(
          `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"`
        )
        let sent = 0
        const pump = () => {
          while (sent < reply.bytes) {
            sent += chunk.length
            if (!res.write(chunk)) return void res.once("drain", pump)
          }
          res.end(`"},"finish_reason":"stop"}]}`)
        }
        res.on("error", () => {})
        return pump()
      }
    }
  }

  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c))
    req.on("end", () => {
      const request: Received = {
        at: Date.now(),
        path: req.url ?? "",
        authorization: req.headers.authorization,
        traceparent: req.headers.traceparent as string | undefined,
        body: chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined
      }
      received.push(request)
      if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
        return void res.writeHead(404).end()
      }
      const reply = script.length > 1 ? script.shift()! : script[0] ?? { kind: "answer", content: "no script" }
      respond(reply, request, res)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}/v1/chat/completions`,
    received,
    /** Replaces the script and forgets what was received. */
    script: (...replies: Array<Reply>) => {
      script = replies
      received.length = 0
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
