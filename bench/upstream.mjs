// The benchmarks' fake vendor API (see startUpstream in harness.ts): a small JSON body after argv[2] ms.
import { createServer } from "node:http"

const delayMs = Number(process.argv[2] ?? 0)
const server = createServer((_, res) => {
  const answer = () => {
    res.writeHead(200, { "content-type": "application/json" })
    res.end(`{"ok":true,"temperature":21}`)
  }
  if (delayMs > 0) setTimeout(answer, delayMs)
  else answer()
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }))
process.on("disconnect", () => process.exit(0))
