import { Api } from "@altan/domain/Api"
import { ErrorCode, errorCodes } from "@altan/domain/Errors"
import { ToolInputInvalid } from "@altan/domain/ToolWorker"
import * as OpenApi from "@effect/platform/OpenApi"
import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// The `Error` schema's `code` enumerates what the API answers: no fewer codes (a client could not handle one it is
// sent), no more (a stale one misleads). The error classes and `envelopeOf` take only `ErrorCode`s, so the compiler
// keeps the code paths honest; this reads the sources to keep the list itself exact.

const packages = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

const sources = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name)
    // the console's script is browser code, whose codes are its own fallbacks
    if (entry.isDirectory()) return entry.name === "console" ? [] : sources(file)
    return entry.name.endsWith(".ts") ? [readFileSync(file, "utf8")] : []
  })

const matches = (texts: ReadonlyArray<string>, pattern: RegExp) =>
  texts.flatMap((text) => [...text.matchAll(pattern)].map((m) => m[1]!))

const errorClasses = "InvalidRequest|Unauthorized|Forbidden|NotFound|Conflict|PayloadTooLarge|Unavailable|" +
  "TooManyRequests|UpstreamFailed"

/** Every code the sources can answer over HTTP. */
const answered = () => {
  const all = readdirSync(packages).flatMap((p) => {
    try {
      return sources(path.join(packages, p, "src"))
    } catch {
      return []
    }
  })
  return new Set([
    // the error classes' defaults
    ...matches(all, /\bfields\("([a-z_]+)"\)/g),
    // codes given to an error class, in any package (the agent's `Conflict`s cross to the edge)
    ...matches(all, new RegExp(`new (?:${errorClasses})\\(\\{[^}]*?\\bcode: "([a-z_]+)"`, "g")),
    // the edge's own answers (no route, refused bodies, malformed HTTP) and what its handlers raise
    ...matches(sources(path.join(packages, "integrator/src")), /\bcode: "([a-z_]+)"/g),
    // a tool's input refused at submission is answered with the tool's own code
    new ToolInputInvalid({ tool_id: "t", message: "m" }).code
  ])
}

describe("the API's error codes", () => {
  it("are what the sources answer, each with its line", () => {
    expect([...answered()].sort()).toEqual([...ErrorCode.literals].sort())
    for (const code of ErrorCode.literals) expect(errorCodes[code], code).toMatch(/^[1-5]\d\d: /)
  })

  it("are the `Error` schema's enum, the body of every error answer in the OpenAPI document", () => {
    const spec = OpenApi.fromApi(Api) as any
    const schemas = spec.components.schemas
    expect(schemas.Error.properties.code).toEqual({ type: "string", enum: ErrorCode.literals })
    expect(schemas.HttpApiDecodeError).toBeUndefined()
    let errors = 0
    for (const [route, item] of Object.entries<any>(spec.paths)) {
      for (const [method, operation] of Object.entries<any>(item)) {
        for (const [status, response] of Object.entries<any>(operation.responses ?? {})) {
          if (Number(status) < 400) continue
          errors++
          const ref: string = response.content["application/json"].schema.$ref
          expect(ref, `${method} ${route} ${status}`).toMatch(/^#\/components\/schemas\//)
          expect(schemas[ref.split("/").pop()!].properties.error).toEqual({ $ref: "#/components/schemas/Error" })
        }
      }
    }
    expect(errors).toBeGreaterThan(50)
  })
})
