import { Api } from "@altan/domain/Api"
import * as OpenApi from "@effect/platform/OpenApi"
import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// The OpenAPI document the edge serves at /openapi.json, linted with Redocly's recommended rules: what users'
// generators and docs tools read must be clean.

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
const redocly = path.join(root, "node_modules/.bin/redocly")

const lint = (file: string) =>
  new Promise<{ totals: { errors: number; warnings: number }; problems: Array<{ ruleId: string; message: string }> }>(
    (resolve, reject) =>
      // the exit code says whether there were errors; the JSON report says which
      execFile(redocly, ["lint", "--extends", "recommended", "--format", "json", file], {
        env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_NOTIFICATIONS: "true", DO_NOT_TRACK: "1" },
        timeout: 60_000
      }, (error, stdout) => {
        try {
          resolve(JSON.parse(stdout))
        } catch {
          reject(error ?? new Error(`no report from redocly: ${stdout}`))
        }
      })
  )

describe("the OpenAPI document", () => {
  it("passes Redocly's recommended rules: summaries, tags, servers, licence, named schemas", async () => {
    const spec = OpenApi.fromApi(Api)
    // what the rules look at, so a failing lint is explained by the document and not by a broken run
    expect(spec.servers).toEqual([{ url: "/", description: expect.any(String) }])
    expect(spec.info.license?.name).toBeDefined()
    for (const tag of spec.tags) expect(tag.description, tag.name).toBeDefined()
    for (const [route, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item as Record<string, { summary?: string }>)) {
        if (typeof op === "object" && op !== null && "responses" in op) {
          expect(op.summary, `${method} ${route}`).toBeDefined()
        }
      }
    }
    // the task's shapes are named components, the event stream says what each event is
    const schemas = spec.components.schemas as Record<string, unknown>
    for (const name of ["Task", "Step", "TaskRequest", "TaskEvent", "WaitingFor", "TaskPage"]) {
      expect(schemas[name], name).toBeDefined()
    }
    const stream = (spec.paths["/v1/tasks/{task_id}/events"] as any).get.responses["200"].content["text/event-stream"]
    expect(stream["x-event-schema"]).toEqual({ $ref: "#/components/schemas/TaskEvent" })
    const dir = mkdtempSync(path.join(tmpdir(), "altan-openapi-"))
    try {
      const file = path.join(dir, "openapi.json")
      writeFileSync(file, JSON.stringify(spec))
      const report = await lint(file)
      // the licence names no SPDX id (the product's is its own); TaskEvent is referred to from the event stream's
      // `x-event-schema`, which the rule does not follow
      expect(
        report.problems.filter((p) =>
          !p.ruleId.startsWith("info-license") &&
          !(p.ruleId === "no-unused-components" && p.message.includes("TaskEvent"))
        )
      ).toEqual([])
      expect(report.totals.errors).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 90_000)
})
