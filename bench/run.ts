/** Runs every benchmark under bench/ (or the ones named on the command line), one after another. */
import { spawnSync } from "node:child_process"
import { readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"

const dir = fileURLToPath(new URL(".", import.meta.url))
const skip = new Set(["run.ts", "harness.ts"])
const named = process.argv.slice(2)
const benches = readdirSync(dir).filter((f) =>
  f.endsWith(".ts") && !skip.has(f) && (named.length === 0 || named.some((n) => f.startsWith(n)))
)
for (const file of benches) {
  console.log(`\n## bench/${file}  (node ${process.version})\n`)
  const { status } = spawnSync(process.execPath, [
    "--expose-gc",
    "--conditions=@altan/source",
    "--import",
    "tsx",
    `${dir}${file}`
  ], {
    stdio: "inherit"
  })
  if (status !== 0) process.exit(status ?? 1)
}
