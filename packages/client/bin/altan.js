#!/usr/bin/env node
// The `altan` command: the compiled CLI (dist/bin/altan.js). In a checkout of the repository that was not built, its
// TypeScript source instead, through tsx and the workspace's `@altan/source` condition (as `npm run altan` does).
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

const compiled = new URL("../dist/bin/altan.js", import.meta.url)
const source = new URL("../src/bin/altan.ts", import.meta.url)
if (existsSync(compiled)) {
  await import(compiled.href)
} else if (existsSync(source)) {
  const child = spawnSync(
    process.execPath,
    ["--conditions=@altan/source", "--import", "tsx", fileURLToPath(source), ...process.argv.slice(2)],
    { stdio: "inherit" }
  )
  process.exitCode = child.status ?? 1
} else {
  process.stderr.write("altan: dist/bin/altan.js is missing; build the package first (npm run build)\n")
  process.exitCode = 2
}
