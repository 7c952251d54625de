import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { freePort } from "./runtime.js"

/**
 * `@altan/client` installed as a user outside the repository would: `npm pack` of it and of `@altan/domain` (after
 * `tsc -b`), both tarballs `npm install`ed into a fresh project in a temporary directory (their dependencies from the
 * npm cache or the registry), then imported from plain Node ESM (no `--conditions`, no tsx), type-checked from a
 * TypeScript file, and its `altan` bin run. Also `npm run client:pack-check`.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url))
const npm = process.platform === "win32" ? "npm.cmd" : "npm"
let dir = ""
let project = ""
let packed: Record<string, ReadonlyArray<string>> = {}

beforeAll(() => {
  execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-b", "packages/client"], {
    cwd: root,
    stdio: "inherit"
  })
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-client-pack-"))
  const report: Array<{ filename: string; files: Array<{ path: string }> }> = JSON.parse(execFileSync(
    npm,
    ["pack", "--json", "--pack-destination", dir, "--workspace", "packages/domain", "--workspace", "packages/client"],
    { cwd: root, encoding: "utf8" }
  ))
  packed = Object.fromEntries(report.map((r) => [r.filename, r.files.map((f) => f.path)]))
  project = path.join(dir, "project")
  fs.mkdirSync(project)
  fs.writeFileSync(
    path.join(project, "package.json"),
    JSON.stringify({ name: "try-altan", private: true, type: "module" })
  )
  execFileSync(
    npm,
    [
      "install",
      "--prefer-offline",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      path.join(dir, "altan-domain-0.1.0.tgz"),
      path.join(dir, "altan-client-0.1.0.tgz")
    ],
    { cwd: project, stdio: ["ignore", "inherit", "inherit"] }
  )
}, 120_000)

afterAll(() => {
  if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
})

describe("@altan/client packed and installed outside the repository", () => {
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
