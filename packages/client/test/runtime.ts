import * as esbuild from "esbuild"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { root, startNpmStart } from "../../../testing/npmStart.js"

export { freePort, root } from "../../../testing/npmStart.js"

/**
 * The CLI's sources (`src/bin/altan.ts`, with the workspace's `@altan/source` condition, so `@altan/domain` from its
 * sources too) bundled by esbuild into one file in a temporary directory: the same code the launcher runs through tsx
 * in the checkout, starting in a fifth of the time, and nothing written into the checkout (no `dist`). `remove()` when
 * done.
 */
export const bundleCli = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-cli-"))
  const file = path.join(dir, "altan.mjs")
  await esbuild.build({
    entryPoints: [path.join(root, "packages/client/src/bin/altan.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["@altan/source"],
    outfile: file,
    logLevel: "error"
  })
  return { file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

/**
 * The embedded runtime as `npm start` runs it (`testing/npmStart.ts`, shared with the cluster's tests) with
 * `DEMO_LLM=1`, on free loopback ports; its printed development token (admin of tenant `demo`).
 */
export const startAltan = (env: Record<string, string> = {}) => startNpmStart({ DEMO_LLM: "1", ...env })

export interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** A command as a child process in `cwd`, with only `env` (and `PATH`) in its environment. */
export const spawnCommand = (argv: ReadonlyArray<string>, env: Record<string, string>, cwd = root) => {
  const [command, ...args] = argv
  const child: ChildProcess = spawn(command === "node" ? process.execPath : command!, args, {
    cwd,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (d) => (stdout += String(d)))
  child.stderr!.on("data", (d) => (stderr += String(d)))
  const done = new Promise<Run>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  )
  return {
    child,
    done,
    stderr: () => stderr,
    /** Resolves once stderr matches `pattern`. */
    waitForStderr: async (pattern: RegExp) => {
      const deadline = Date.now() + 20_000
      while (!pattern.test(stderr)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no ${pattern} in:\n${stderr}`)
        await new Promise((r) => setTimeout(r, 50))
      }
      return pattern.exec(stderr)!
    }
  }
}
