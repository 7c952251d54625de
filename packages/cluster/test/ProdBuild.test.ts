import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as jose from "jose"
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process"
import { generateKeyPairSync } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { freePort } from "./fault/harness.js"

/**
 * The production build as the Dockerfile makes it, without Docker: `npm run build` (`tsc -b`, incremental: CI's
 * `npm run check` has built already), then a tree holding what the image's runtime stage holds — the package.json
 * files, the dist folders and the packages `npm ci --omit=dev` installs (read from package-lock.json, hard-linked
 * from node_modules) — outside the repository, so nothing resolves to a dev dependency or a `src/*.ts` file. The
 * services start from it with `npm run start:prod`'s command (plain node) in embedded mode on free loopback ports,
 * run the README's quick-start task, and stop cleanly on SIGTERM.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url))
const rootPackage = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
const workspaces: ReadonlyArray<string> = rootPackage.workspaces
const startProd: string = rootPackage.scripts["start:prod"]
/** The key pair of the test's own token issuer (production refuses the generated development key). */
const keys = generateKeyPairSync("ec", { namedCurve: "P-256" })

/** Hard-links (or copies, across file systems) `from` into `to`, leaving out `skip` (absolute paths). */
const linkTree = (from: string, to: string, skip: ReadonlySet<string> = new Set()) => {
  fs.mkdirSync(to, { recursive: true })
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name)
    const target = path.join(to, entry.name)
    if (skip.has(source)) continue
    if (entry.isDirectory()) linkTree(source, target, skip)
    else if (entry.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(source), target)
    else {
      try {
        fs.linkSync(source, target)
      } catch {
        fs.copyFileSync(source, target)
      }
    }
  }
}

interface LockEntry {
  readonly dev?: boolean
  readonly optional?: boolean
  readonly link?: boolean
  readonly resolved?: string
}

/** What the image's runtime stage holds, laid out in `tree`. */
const layOutRuntimeTree = (tree: string) => {
  for (const file of ["package.json", "package-lock.json"]) {
    fs.copyFileSync(path.join(root, file), path.join(tree, file))
  }
  for (const workspace of workspaces) {
    fs.mkdirSync(path.join(tree, workspace), { recursive: true })
    fs.copyFileSync(path.join(root, workspace, "package.json"), path.join(tree, workspace, "package.json"))
    linkTree(path.join(root, workspace, "dist"), path.join(tree, workspace, "dist"))
  }
  const lock: { packages: Record<string, LockEntry> } = JSON.parse(
    fs.readFileSync(path.join(root, "package-lock.json"), "utf8")
  )
  const installed: Array<string> = []
  for (const [key, entry] of Object.entries(lock.packages)) {
    // `npm ci --omit=dev` installs every package the lockfile does not mark dev
    if (!key.includes("node_modules/") || entry.dev) continue
    const target = path.join(tree, key)
    if (entry.link) {
      fs.mkdirSync(path.dirname(target), { recursive: true })
      fs.symlinkSync(path.relative(path.dirname(target), path.join(tree, entry.resolved!)), target)
      continue
    }
    const source = path.join(root, key)
    // an optional package for another platform is in the lockfile, not on disk
    if (!fs.existsSync(source) && entry.optional) continue
    linkTree(source, target, new Set([path.join(source, "node_modules")]))
    installed.push(key)
  }
  return installed
}

/** Module specifiers of every import, re-export and literal dynamic import in a compiled file. */
const specifiersOf = (file: string) =>
  [...fs.readFileSync(file, "utf8").matchAll(/(?:\bfrom|^import|\bimport\s*\()\s*["']([^"'\s]+)["']/gm)].map((m) =>
    m[1]!
  )

const filesUnder = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? filesUnder(path.join(dir, entry.name))
      : entry.name.endsWith(".js")
      ? [path.join(dir, entry.name)]
      : []
  )

let tree = ""
let child: ChildProcess | undefined
const output: Array<string> = []

beforeAll(() => {
  try {
    execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-b"], {
      cwd: root,
      encoding: "utf8",
      stdio: "pipe"
    })
  } catch (error: any) {
    throw new Error(`npm run build (tsc -b) failed:\n${error.stdout}${error.stderr}`)
  }
  tree = fs.mkdtempSync(path.join(os.tmpdir(), "altan-prod-"))
  layOutRuntimeTree(tree)
}, 120_000)

afterAll(async () => {
  // only the process this test started
  if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  if (tree) fs.rmSync(tree, { recursive: true, force: true })
})

describe("production build", () => {
  it("start:prod runs the compiled entry point with plain node", () => {
    const argv = startProd.split(/\s+/)
    expect(argv[0]).toBe("node")
    expect(startProd).not.toMatch(/tsx|--conditions|--import|--loader|\.ts\b/)
    expect(argv.at(-1)).toBe("packages/cluster/dist/main.js")
  })

  it("every import of the compiled code resolves within the production tree, to compiled JavaScript", () => {
    // an ES module's import.meta.resolve answers for its own package; one probe per workspace's dist
    const probes: Record<string, Array<string>> = {}
    for (const workspace of workspaces) {
      const dist = path.join(tree, workspace, "dist")
      const specifiers = new Set<string>()
      for (const file of filesUnder(dist)) {
        for (const specifier of specifiersOf(file)) {
          if (specifier.startsWith("node:")) continue
          specifiers.add(
            specifier.startsWith(".") ? pathToFileURL(path.resolve(path.dirname(file), specifier)).href : specifier
          )
        }
      }
      fs.writeFileSync(path.join(dist, "resolve-probe.mjs"), "export const resolve = (s) => import.meta.resolve(s)\n")
      probes[workspace] = [...specifiers]
    }
    const script = `
      const probes = ${JSON.stringify(probes)}
      const out = {}
      for (const [workspace, specifiers] of Object.entries(probes)) {
        const { resolve } = await import("./" + workspace + "/dist/resolve-probe.mjs")
        for (const s of specifiers) {
          try { out[workspace + " " + s] = resolve(s) } catch (e) { out[workspace + " " + s] = "unresolved: " + e.code }
        }
      }
      console.log(JSON.stringify(out))`
    fs.writeFileSync(path.join(tree, "resolve-check.mjs"), script)
    const resolved: Record<string, string> = JSON.parse(
      execFileSync(process.execPath, ["resolve-check.mjs"], { cwd: tree, encoding: "utf8" })
    )
    for (const workspace of workspaces) fs.rmSync(path.join(tree, workspace, "dist", "resolve-probe.mjs"))
    fs.rmSync(path.join(tree, "resolve-check.mjs"))

    const bare = Object.keys(resolved).filter((k) => !k.split(" ")[1]!.startsWith("file:"))
    // the lazily imported cloud clients are checked too, though embedded mode never loads them
    expect(bare).toEqual(expect.arrayContaining([
      "packages/audit @google-cloud/logging",
      "packages/integrator @google-cloud/secret-manager"
    ]))
    const problems = Object.entries(resolved).filter(([, url]) =>
      !url.startsWith(pathToFileURL(fs.realpathSync(tree)).href) || /\.[cm]?ts$/.test(url) ||
      /\/packages\/[^/]+\/src\//.test(url)
    )
    expect(problems).toEqual([])
  })

  it("the compiled services start from the production tree, run a task and stop on SIGTERM", async () => {
    const port = await freePort()
    const metricsPort = await freePort()
    const argv = startProd.split(/\s+/).slice(1)
    // embedded mode: no DATABASE_URL, REDIS_URL or real token issuer, whatever this shell has
    child = spawn(process.execPath, argv, {
      cwd: tree,
      env: {
        PATH: process.env.PATH ?? "",
        NODE_ENV: "production",
        // production refuses the generated development key: the test is its own token issuer
        AUTH_PUBLIC_KEY: keys.publicKey.export({ type: "spki", format: "pem" }).toString(),
        AUTH_ISSUER: "https://idp.prod-build.test",
        AUTH_AUDIENCE: "altan-prod-build",
        PORT: String(port),
        HTTP_HOST: "127.0.0.1",
        RUNNER_PORT: String(await freePort()),
        METRICS_PORT: String(metricsPort),
        LOG_LEVEL: "info"
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const running = child
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      running.once("exit", (code, signal) => resolve({ code, signal }))
    )
    const stdout: Array<string> = []
    running.stdout!.on("data", (d) => {
      output.push(String(d))
      stdout.push(String(d))
    })
    const stderr: Array<string> = []
    running.stderr!.on("data", (d) => {
      output.push(String(d))
      stderr.push(String(d))
    })
    const base = `http://127.0.0.1:${port}`

    const deadline = Date.now() + 30_000
    let token: string | undefined
    while (token === undefined) {
      if (running.exitCode !== null || Date.now() > deadline) {
        throw new Error(`start:prod did not come up:\n${output.join("").slice(-3000)}`)
      }
      const healthy = await fetch(`${base}/healthz`).then((r) => r.ok, () => false)
      token = healthy
        ? await new jose.SignJWT({ tenant_id: "prod-build", role: "admin", sub: "ops" })
          .setProtectedHeader({ alg: "ES256" })
          .setIssuer("https://idp.prod-build.test")
          .setAudience("altan-prod-build")
          .setIssuedAt()
          .setExpirationTime("10m")
          .sign(keys.privateKey)
        : undefined
      if (token === undefined) await new Promise((r) => setTimeout(r, 200))
    }

    const response = await fetch(`${base}/v1/tasks`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        input: {
          steps: [
            {
              id: "parse",
              tool: "email.parse",
              input: {
                raw: "From: Ada Lovelace <ada@example.com>\r\nTo: team@example.com\r\nSubject: Launch review\r\n" +
                  "Date: Tue, 05 Mar 2024 14:30:00 +0100\r\n\r\nLet us meet on Tuesday."
              }
            },
            {
              id: "reply",
              tool: "text.template",
              input: {
                template: "Hi {{name}}, noted: \"{{subject}}\" on {{date}}.",
                variables: {
                  name: { $ref: "parse.output.from_name" },
                  subject: { $ref: "parse.output.subject" },
                  date: { $ref: "parse.output.date" }
                }
              }
            }
          ]
        }
      })
    })
    const task = await response.json()
    expect(response.status, JSON.stringify(task)).toBe(200)
    expect(task.status).toBe("succeeded")
    expect(task.output).toEqual({ text: "Hi Ada Lovelace, noted: \"Launch review\" on 2024-03-05T13:30:00.000Z." })
    // the console's assets are compiled into dist with the code
    for (const asset of ["/console", "/console/console.js", "/console/console.css"]) {
      const served = await fetch(`${base}${asset}`)
      expect(served.status, asset).toBe(200)
      expect((await served.text()).length, asset).toBeGreaterThan(500)
    }
    // the operator port, whose exporter libraries the production tree must hold too
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text())
    expect(metrics).toMatch(/^altan_tasks_finished_total\{status="succeeded"\} 1$/m)

    running.kill("SIGTERM")
    const exit = await Promise.race([
      exited,
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 15_000))
    ])
    expect(exit, output.join("").slice(-3000)).toEqual({ code: 0, signal: null })

    // stdout is the audit log and nothing else (logs and the banner go to stderr): it verifies as it is
    const lines = stdout.join("").split("\n").filter((line) => line.trim() !== "")
    const actions = lines.map((line) => (JSON.parse(line) as { audit: { action: string } }).audit.action)
    expect(actions).toEqual(expect.arrayContaining(["task.accepted", "task.finished"]))
    expect(stderr.join("")).toContain("Altan API listening")
    expect(stdout.join("")).not.toContain("Altan API listening")
    // a real issuer's keys: no development token is minted, nor printed anywhere
    expect(output.join("")).not.toContain("export TOKEN=")
    const verify = spawnSync(process.execPath, [path.join(root, "packages/audit/dist/bin/audit-verify.js")], {
      input: stdout.join(""),
      encoding: "utf8"
    })
    expect(verify.status, verify.stdout + verify.stderr).toBe(0)
    expect(verify.stdout).not.toContain("skipped")
  }, 60_000)

  it("refuses to start in production without a token issuer's key (no development key, no printed token)", async () => {
    const refused = spawnSync(process.execPath, startProd.split(/\s+/).slice(1), {
      cwd: tree,
      env: {
        PATH: process.env.PATH ?? "",
        NODE_ENV: "production",
        PORT: String(await freePort()),
        HTTP_HOST: "127.0.0.1",
        RUNNER_PORT: String(await freePort()),
        METRICS_PORT: String(await freePort())
      },
      encoding: "utf8",
      timeout: 30_000
    })
    expect(refused.status, refused.stdout + refused.stderr).not.toBe(0)
    expect(refused.stderr).toContain("NODE_ENV=production needs AUTH_JWKS_URL or AUTH_PUBLIC_KEY")
    expect(refused.stdout + refused.stderr).not.toContain("export TOKEN=")
  }, 40_000)
})

describe("Dockerfile", () => {
  const dockerfile = fs.readFileSync(path.join(root, "Dockerfile"), "utf8")
  const instructions = dockerfile.split("\n").filter((l) => l.trim() !== "" && !l.trimStart().startsWith("#"))
  const stages = instructions.reduce<Array<Array<string>>>((acc, line) => {
    if (/^FROM\s/i.test(line)) acc.push([line])
    else acc.at(-1)?.push(line)
    return acc
  }, [])
  const runtime = stages.at(-1)!
  const nameOf = (stage: ReadonlyArray<string>) => /\sAS\s+(\S+)/i.exec(stage[0]!)?.[1]
  const parentOf = (stage: ReadonlyArray<string>) => stages.find((s) => nameOf(s) === stage[0]!.split(/\s+/)[1])
  /** A stage's instructions after those of the stages it is built FROM. */
  const lineage = (stage: ReadonlyArray<string>): ReadonlyArray<string> => {
    const parent = parentOf(stage)
    return parent ? [...lineage(parent), ...stage] : stage
  }
  const args = Object.fromEntries(
    instructions.flatMap((l) => {
      const m = /^ARG\s+(\w+)=(\S+)/.exec(l)
      return m ? [[m[1]!, m[2]!]] : []
    })
  )
  const image = (from: string) => from.split(/\s+/)[1]!.replace(/^\$\{(\w+)\}$/, (_, name) => args[name] ?? "")

  it("builds in one stage, installs production dependencies in another, runs from a third", () => {
    expect(stages.length).toBeGreaterThanOrEqual(3)
    const build = stages.find((s) => s.some((l) => /RUN npm run build/.test(l)))!
    expect(build.some((l) => /RUN npm ci(?!.*--omit)/.test(l))).toBe(true)
    expect(stages.some((s) => s.some((l) => /RUN npm ci .*--omit=dev/.test(l)))).toBe(true)
    // the runtime stage runs nothing at build time and copies, for every workspace, its dist
    expect(runtime.filter((l) => /^RUN\s/.test(l))).toEqual([])
    for (const workspace of workspaces) {
      expect(runtime).toContain(`COPY --from=build /app/${workspace}/dist/ ${workspace}/dist/`)
      expect(dockerfile.match(new RegExp(`^COPY ${workspace}/package\\.json ${workspace}/$`, "gm"))?.length).toBe(1)
    }
  })

  it("copies the dependency patches before every npm ci, whose postinstall applies them", () => {
    if (!/patch-package/.test(rootPackage.scripts.postinstall ?? "")) return
    const installs = stages.filter((s) => s.some((l) => /^RUN npm ci/.test(l)))
    expect(installs.length).toBeGreaterThanOrEqual(2)
    for (const stage of installs.map(lineage)) {
      const copied = stage.findIndex((l) => /^COPY patches\/ patches\/$/.test(l))
      expect(copied, stage[0]).toBeGreaterThan(0)
      expect(copied).toBeLessThan(stage.findIndex((l) => /^RUN npm ci/.test(l)))
    }
    expect(fs.readFileSync(path.join(root, ".dockerignore"), "utf8")).not.toMatch(/^\/?patches/m)
  })

  it("uses pinned Node 20 images: a version tag or a digest, never latest", () => {
    // stages built FROM another stage inherit its image
    for (const stage of stages.filter((s) => parentOf(s) === undefined)) {
      const ref = image(stage[0]!)
      expect(ref).toMatch(/^node:20[.\w-]*(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$/)
      expect(ref).toMatch(/:20\.\d+\.\d+|@sha256:/)
      expect(ref).not.toMatch(/:latest\b/)
    }
  })

  it("runs as a numeric non-root user, the start:prod command in exec form (no shell)", () => {
    const user = runtime.find((l) => /^USER\s/.test(l))
    expect(user).toMatch(/^USER\s+([1-9]\d{3,})(:[1-9]\d{3,})?$/)
    const cmd = runtime.find((l) => /^CMD\s/.test(l))!
    expect(JSON.parse(cmd.replace(/^CMD\s+/, ""))).toEqual(startProd.split(/\s+/))
    expect(runtime.some((l) => /^ENTRYPOINT\s/.test(l))).toBe(false)
  })

  it("keeps dependencies, build output, git and tests out of the build context", () => {
    const ignored = fs.readFileSync(path.join(root, ".dockerignore"), "utf8").split("\n").map((l) => l.trim())
    expect(ignored).toEqual(expect.arrayContaining([".git", "**/node_modules", "**/dist", "**/test", ".env"]))
  })
})
