/**
 * `npm run audit:verify -- [--partial] [file]`: checks the hash chains of an audit export, read from `file`
 * or stdin: JSON lines of raw records, of the stdout sink (`{"severity":..., "audit": {...}}`) or of Cloud
 * Logging entries (`jsonPayload`), or the JSON array `gcloud logging read --format=json` prints. Prints a
 * summary; exits 0 when every chain verifies, 1 naming the chain, seq and reason of each first broken link,
 * 2 when the input cannot be read. `--partial` accepts chains that start after seq 1 (a time window).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { readFile } from "node:fs/promises"
import * as Verify from "../Verify.js"

const usage = "usage: audit-verify [--partial] [file]   (reads stdin without a file)"

const readStdin = async () => {
  const chunks: Array<Buffer> = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString("utf8")
}

const main = Effect.gen(function*() {
  const args = process.argv.slice(2)
  const partial = args.includes("--partial")
  const files = args.filter((arg) => arg !== "--partial")
  if (files.length > 1 || files.some((arg) => arg.startsWith("--"))) {
    yield* Console.error(usage)
    return 2
  }
  const file = files[0]
  const text = yield* Effect.tryPromise(() => (file === undefined ? readStdin() : readFile(file, "utf8"))).pipe(
    Effect.option
  )
  if (text._tag === "None") {
    yield* Console.error(`audit-verify: cannot read ${file ?? "stdin"}`)
    return 2
  }
  const items = Verify.parseExport(text.value)
  const result = Verify.verify(items.map((item) => item.value), { partial })
  yield* Console.log(Verify.formatReport(result, (index) => items[index]?.where ?? `item ${index + 1}`))
  return result.ok ? 0 : 1
})

NodeRuntime.runMain(main, {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : 2)
})
