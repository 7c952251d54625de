import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import { createServer } from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/**
 * Test support shared by the packages' tests (`packages/cluster/test/TryLocally.test.ts`,
 * `packages/client/test/runtime.ts`): the embedded runtime as `npm start` runs it.
 */

/** The repository's root. */
export const root = fileURLToPath(new URL("..", import.meta.url))

/** A loopback port nothing listens on (at the time of asking). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    }).on("error", reject)
  })

/**
 * `npm start`'s own command (from package.json) in a process of its own, with only `env` (and `PATH`) of this
 * process's environment — nothing of the shell's (a DATABASE_URL, a real token issuer) reaches it — on free loopback
 * ports; once healthy, its URL and its printed development token (admin of tenant `demo`). `stop()` ends it (SIGTERM,
 * SIGKILL after 15 s), by its pid.
 */
export const startNpmStart = async (env: Record<string, string> = {}) => {
  const npmStart: string = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).scripts.start
  const port = await freePort()
  const output: Array<string> = []
  const child: ChildProcess = spawn(process.execPath, npmStart.split(/\s+/).slice(1), {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", PORT: String(port), HTTP_HOST: "127.0.0.1", METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  child.stdout!.on("data", (d) => output.push(String(d)))
  child.stderr!.on("data", (d) => output.push(String(d)))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 90_000
  let token: string | undefined
  while (token === undefined) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`npm start did not come up:\n${output.join("").slice(-3000)}`)
    }
    const healthy = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false)
    token = healthy ? /export TOKEN=(\S+)/.exec(output.join(""))?.[1] : undefined
    if (token === undefined) await new Promise((r) => setTimeout(r, 200))
  }
  return {
    url,
    token,
    output: () => output.join(""),
    stop: async () => {
      child.kill("SIGTERM")
      const stopped = await Promise.race([
        exited.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 15_000))
      ])
      if (!stopped) child.kill("SIGKILL")
    }
  }
}
