import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { closeServers, serve, sse, task, taskId } from "./fakeApi.js"
import { root, spawnCommand } from "./runtime.js"

/**
 * The package's launcher, `bin/altan.js` (what `npx altan` runs), in the repository's checkout: it runs the CLI's
 * sources in a child process through tsx, resolved from the launcher (not the working directory), and is a faithful
 * stand-in for it: a signal that would stop it stops the child, and it ends as the child did.
 */
const launcher = path.join(root, "packages/client/bin/altan.js")
let cwd = ""

beforeAll(() => {
  // a directory with no node_modules above it
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), "altan-launcher-"))
})
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }))
afterEach(closeServers)

/** The processes whose parent is `pid` (from /proc). */
const childrenOf = (pid: number): Array<number> =>
  fs.readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).flatMap((entry) => {
    try {
      // the fields after the command's closing parenthesis: state, ppid, ...
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      return ppid === pid ? [Number(entry)] : []
    } catch {
      return []
    }
  })

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const start = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  spawnCommand(["node", launcher, ...args], env, cwd)

describe("bin/altan.js in the checkout", () => {
  it("runs the sources from any working directory (tsx resolved from the launcher)", async () => {
    const result = await start(["--help"]).done
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    expect(result.stdout).toContain("Usage: altan <command>")
  })

  // the launcher's child is found in /proc
  it.skipIf(process.platform !== "linux")(
    "forwards SIGTERM to the CLI it started and ends by the same signal; no child left behind",
    async () => {
      let following: () => void = () => {}
      const connected = new Promise<void>((resolve) => (following = resolve))
      // a task whose event stream stays open: the CLI follows it until stopped
      const { url } = await serve((_req, res) => {
        sse(res)
        res.write(": open\n\n")
        following()
      }, { task })
      const { child, done } = start(["tasks", "watch", taskId], { ALTAN_URL: url, ALTAN_TOKEN: "t" })
      const orphans: Array<number> = []
      try {
        await Promise.race([
          connected,
          done.then((r) =>
            Promise.reject(new Error(`altan ended (${r.code ?? r.signal}) before following:\n${r.stderr}`))
          )
        ])
        const [cli] = childrenOf(child.pid!)
        expect(cli).toBeDefined()
        orphans.push(cli!)
        const argv = fs.readFileSync(`/proc/${cli}/cmdline`, "utf8").split("\0")
        expect(argv).toContain(path.join(root, "packages/client/src/bin/altan.ts"))
        expect(argv[argv.indexOf("--import") + 1]).toMatch(/^file:\/\/.*\/node_modules\/tsx\//)

        child.kill("SIGTERM")
        const result = await done
        expect(result.signal).toBe("SIGTERM")
        const deadline = Date.now() + 5_000
        while (alive(cli!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
        expect(alive(cli!)).toBe(false)
      } finally {
        // what this test started, should the launcher have left it running
        for (const pid of orphans) if (alive(pid)) process.kill(pid, "SIGKILL")
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      }
    }
  )
})
