import { afterAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { freePort } from "./runtime.js"

/**
 * `@altan/client` installed as a user outside the repository would: `npm pack` of it and of `@altan/domain` (their
 * compiled `dist`, which `npm run client:pack-check` builds first), both tarballs installed into a fresh project in a
 * temporary directory, then imported from plain Node ESM (no `--conditions`, no tsx), type-checked from a TypeScript
 * file, and its `altan` bin run.
 *
 * Not part of `npm test` (it needs the build): `npm run client:pack-check`, which `.ci/run` runs after the tests. The
 * install is offline and pinned: `npm ci --offline` from a lockfile made of the repository's own `package-lock.json`
 * (the tarballs' dependencies at the versions and integrity the repository installs), so it sends nothing off the
 * machine and cannot pick up a newer release; what the npm cache lacks (it has what `npm ci` in the repository
 * fetched) skips the check, saying so.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url))
const npm = process.platform === "win32" ? "npm.cmd" : "npm"
const tarballs = { "@altan/domain": "altan-domain-0.1.0.tgz", "@altan/client": "altan-client-0.1.0.tgz" } as const

interface LockEntry {
  readonly version?: string
  readonly link?: boolean
  readonly dependencies?: Record<string, string>
  readonly optionalDependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly peerDependenciesMeta?: Record<string, { optional?: boolean }>
  readonly [key: string]: unknown
}

/**
 * The lockfile of a project that depends on the two tarballs: their entries, and those of every package they need,
 * copied from the repository's lockfile with the layout it has (a package nested under a workspace is nested under
 * the installed tarball).
 */
const lockfileFor = (integrity: Record<string, string>) => {
  const entries: Record<string, LockEntry> = JSON.parse(
    fs.readFileSync(path.join(root, "package-lock.json"), "utf8")
  ).packages
  const workspaces: Record<string, string> = { "@altan/domain": "packages/domain", "@altan/client": "packages/client" }
  /** The lock key Node would load `name` from, for the package at lock key `from`: the nearest `node_modules` up. */
  const locate = (from: string, name: string): string | undefined => {
    for (let dir = from;;) {
      const key = `${dir === "" ? "" : `${dir}/`}node_modules/${name}`
      if (entries[key] !== undefined && !entries[key].link) return key
      if (dir === "") return undefined
      const at = dir.lastIndexOf("/node_modules/")
      dir = at === -1 ? "" : dir.slice(0, at)
    }
  }
  const installedAt = (key: string) => {
    for (const [name, dir] of Object.entries(workspaces)) {
      if (key.startsWith(`${dir}/`)) return `node_modules/${name}/${key.slice(dir.length + 1)}`
    }
    return key
  }
  const packages: Record<string, LockEntry> = {}
  const queue = Object.values(workspaces)
  const seen = new Set(queue)
  while (queue.length > 0) {
    const from = queue.shift()!
    const entry = entries[from]!
    const optional = new Set(Object.keys(entry.optionalDependencies ?? {}))
    for (const [name] of Object.entries(entry.peerDependenciesMeta ?? {}).filter(([, meta]) => meta.optional)) {
      optional.add(name)
    }
    const needs = [
      ...Object.keys(entry.dependencies ?? {}),
      ...Object.keys(entry.optionalDependencies ?? {}),
      ...Object.keys(entry.peerDependencies ?? {})
    ]
    const absent: Array<string> = []
    for (const name of needs) {
      if (name in workspaces) continue
      const key = locate(from, name)
      if (key === undefined) {
        // an optional dependency the repository's lock left out (another platform's build): left out here too
        if (optional.has(name)) absent.push(name)
        else throw new Error(`package-lock.json has no ${name} for ${from}`)
        continue
      }
      if (!seen.has(key)) {
        seen.add(key)
        queue.push(key)
      }
    }
    if (Object.values(workspaces).includes(from)) {
      const { name: _name, ...rest } = entry
      packages[`node_modules/${entry.name}`] = {
        ...rest,
        resolved: `file:../${tarballs[entry.name as keyof typeof tarballs]}`,
        integrity: integrity[entry.name as string]
      }
    } else {
      const { dev: _dev, devOptional: _devOptional, ...rest } = entry
      const optionalDependencies = Object.fromEntries(
        Object.entries(entry.optionalDependencies ?? {}).filter(([name]) => !absent.includes(name))
      )
      packages[installedAt(from)] = entry.optionalDependencies === undefined ? rest : { ...rest, optionalDependencies }
    }
  }
  const dependencies = Object.fromEntries(Object.entries(tarballs).map(([name, file]) => [name, `file:../${file}`]))
  return {
    manifest: { name: "try-altan", version: "0.0.0", private: true, type: "module", dependencies },
    lock: {
      name: "try-altan",
      version: "0.0.0",
      lockfileVersion: 3,
      requires: true,
      packages: { "": { name: "try-altan", version: "0.0.0", dependencies }, ...packages }
    }
  }
}

let dir = ""
let project = ""
let packed: Record<string, ReadonlyArray<string>> = {}

/** Packs and installs; why the check cannot run here, if it cannot. */
const prepare = (): string | undefined => {
  for (const workspace of ["domain", "client"]) {
    if (!fs.existsSync(path.join(root, `packages/${workspace}/dist/index.js`))) {
      throw new Error(`packages/${workspace}/dist is missing: run npm run client:pack-check, which builds first`)
    }
  }
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-client-pack-"))
  const report: Array<{ name: string; filename: string; integrity: string; files: Array<{ path: string }> }> = JSON
    .parse(execFileSync(
      npm,
      ["pack", "--json", "--pack-destination", dir, "--workspace", "packages/domain", "--workspace", "packages/client"],
      { cwd: root, encoding: "utf8" }
    ))
  packed = Object.fromEntries(report.map((r) => [r.filename, r.files.map((f) => f.path)]))
  project = path.join(dir, "project")
  fs.mkdirSync(project)
  const { lock, manifest } = lockfileFor(Object.fromEntries(report.map((r) => [r.name, r.integrity])))
  fs.writeFileSync(path.join(project, "package.json"), JSON.stringify(manifest, null, 2))
  fs.writeFileSync(path.join(project, "package-lock.json"), JSON.stringify(lock, null, 2))
  const install = spawnSync(
    npm,
    ["ci", "--offline", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
    { cwd: project, encoding: "utf8" }
  )
  if (install.status === 0) return undefined
  if (/ENOTCACHED/.test(install.stdout + install.stderr)) {
    return `the npm cache lacks a dependency of the tarballs (npm ci in the repository fills it):\n${install.stderr}`
  }
  throw new Error(`npm ci --offline failed:\n${install.stdout}${install.stderr}`)
}

const skipped = (() => {
  try {
    return prepare()
  } catch (error) {
    // afterAll is not registered yet: nothing of this run is left behind
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
})()
if (skipped !== undefined) console.warn(`client pack check skipped: ${skipped}`)

afterAll(() => {
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

describe.skipIf(skipped !== undefined)("@altan/client packed and installed outside the repository", () => {
  it("packs compiled JavaScript, declarations, the bin and the README; no sources, no build info", () => {
    expect(Object.keys(packed).sort()).toEqual(["altan-client-0.1.0.tgz", "altan-domain-0.1.0.tgz"])
    const client = packed["altan-client-0.1.0.tgz"]!
    expect(client).toEqual(expect.arrayContaining([
      "README.md",
      "bin/altan.js",
      "dist/index.js",
      "dist/index.d.ts",
      "dist/Cli.js",
      "dist/bin/altan.js",
      "package.json"
    ]))
    const domain = packed["altan-domain-0.1.0.tgz"]!
    expect(domain).toEqual(
      expect.arrayContaining(["README.md", "dist/Api.js", "dist/Client.js", "dist/TaskRpc.js", "dist/Task.d.ts"])
    )
    for (const files of [client, domain]) {
      expect(files.filter((f) => f.startsWith("src/") || f.endsWith(".tsbuildinfo") || f.startsWith("test/")))
        .toEqual([])
    }
  })

  it("imports from plain Node ESM: the clients, the schemas and the errors", () => {
    const script = `
      import * as Client from "@altan/client"
      import * as Schema from "effect/Schema"
      const request = Schema.decodeUnknownSync(Client.TaskRequest)({ input: { steps: [{ id: "a", tool: "text.template" }] } })
      const event = Schema.decodeUnknownSync(Client.TaskEvent)({ id: "1", type: "task.queued", task_id: "s.t", at: "now" })
      console.log(JSON.stringify({
        functions: ["makeClient", "makeRpcClient", "layer", "taskEvents", "layerAuthorization"].filter((n) => typeof Client[n] === "function"),
        schemas: ["Task", "Step", "TaskEvent", "TaskRequest", "TaskSummary", "ToolDefinition", "LlmConfig"].filter((n) => Schema.isSchema(Client[n])),
        errors: new Client.NotFound({ message: "gone" }).code,
        api: typeof Client.Api.groups,
        rpcs: [...Client.TaskRpcs.requests.keys()],
        request: request.mode,
        event: event.type,
        resolved: import.meta.resolve("@altan/client")
      }))`
    fs.writeFileSync(path.join(project, "check.mjs"), script)
    const out = JSON.parse(execFileSync(process.execPath, ["check.mjs"], { cwd: project, encoding: "utf8" }))
    expect(out).toEqual({
      functions: ["makeClient", "makeRpcClient", "layer", "taskEvents", "layerAuthorization"],
      schemas: ["Task", "Step", "TaskEvent", "TaskRequest", "TaskSummary", "ToolDefinition", "LlmConfig"],
      errors: "not_found",
      api: "object",
      rpcs: expect.arrayContaining(["SubmitTask", "GetTask", "CancelTask", "TaskEvents"]),
      request: "sync",
      event: "task.queued",
      resolved: expect.stringContaining(`${project}/node_modules/@altan/client/dist/index.js`)
    })
  })

  it("type-checks a TypeScript user of it against the packed declarations", () => {
    fs.writeFileSync(
      path.join(project, "use.ts"),
      `import { makeClient, type Task } from "@altan/client"
import * as Effect from "effect/Effect"
export const status = (baseUrl: string, token: string, id: Task["task_id"]) =>
  Effect.flatMap(makeClient({ baseUrl, token }), (api) => api.tasks.get({ path: { task_id: id } })).pipe(
    Effect.map((task): Task["status"] => task.status)
  )
`
    )
    const tsc = spawnSync(process.execPath, [
      path.join(root, "node_modules/typescript/bin/tsc"),
      "--noEmit",
      "--strict",
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--target",
      "es2022",
      "--skipLibCheck",
      "use.ts"
    ], { cwd: project, encoding: "utf8" })
    expect(tsc.stdout + tsc.stderr).toBe("")
    expect(tsc.status).toBe(0)
  }, 60_000)

  it("installs the dependencies at the repository's versions", () => {
    const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")).packages
    for (const name of ["effect", "@effect/platform", "@effect/rpc", "@effect/cluster"]) {
      const installed = JSON.parse(fs.readFileSync(path.join(project, "node_modules", name, "package.json"), "utf8"))
      expect(installed.version, name).toBe(lock[`node_modules/${name}`].version)
    }
  })

  it("installs the altan bin, which runs with plain node", async () => {
    const bin = path.join(project, "node_modules/.bin/altan")
    const helpRun = spawnSync(bin, ["--help"], { encoding: "utf8" })
    expect(helpRun.status).toBe(0)
    expect(helpRun.stdout).toContain("tasks run <file.json | \"text\">")
    const port = await freePort()
    const unreachable = spawnSync(bin, ["tools", "list"], {
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", ALTAN_URL: `http://127.0.0.1:${port}`, ALTAN_TOKEN: "t" }
    })
    expect(unreachable.status).toBe(1)
    expect(unreachable.stderr).toContain(`cannot reach Altan at http://127.0.0.1:${port}`)
    expect(unreachable.stderr).toContain("ECONNREFUSED")
  })
})
