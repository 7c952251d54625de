#!/usr/bin/env node
// The `altan` command. Installed from the package (which ships no sources): the compiled CLI, dist/bin/altan.js. In a
// checkout of the repository (the TypeScript sources beside this file, tsx installed): always the sources, through
// tsx and the workspace's `@altan/source` condition (as `npm run altan` does), so it never runs a stale build.
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import { constants } from "node:os"
import { fileURLToPath, pathToFileURL } from "node:url"

const compiled = new URL("../dist/bin/altan.js", import.meta.url)
const source = new URL("../src/bin/altan.ts", import.meta.url)

/** tsx's loader as a URL, resolved from this file (not from the working directory), or undefined without it. */
const tsx = (() => {
  try {
    return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href
  } catch {
    return undefined
  }
})()

if (existsSync(source) && tsx !== undefined) {
  const child = spawn(
    process.execPath,
    ["--conditions=@altan/source", "--import", tsx, fileURLToPath(source), ...process.argv.slice(2)],
    { stdio: "inherit" }
  )
  // the child is ours to stop: what would stop this process goes to it, and this one ends as it does
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"]
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  for (const signal of signals) process.on(signal, forward)
  child.once("error", (error) => {
    process.stderr.write(`altan: cannot start ${process.execPath}: ${error.message}\n`)
    process.exitCode = 1
  })
  child.once("exit", (code, signal) => {
    for (const s of signals) process.off(s, forward)
    if (signal !== null) {
      // the shell's convention if re-raising does not end this process
      process.exitCode = 128 + (constants.signals[signal] ?? 0)
      process.kill(process.pid, signal)
    } else {
      process.exitCode = code ?? 1
    }
  })
} else if (existsSync(compiled)) {
  await import(compiled.href)
} else {
  process.stderr.write(
    "altan: dist/bin/altan.js is missing and the sources cannot run (tsx not installed); build the package first " +
      "(npm run build)\n"
  )
  process.exitCode = 2
}
