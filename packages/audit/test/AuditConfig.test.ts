import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as AuditConfig from "../src/AuditConfig.js"
import { entry, record } from "./utils.js"

describe("layerFromConfig", () => {
  const withEnv = (env: Record<string, string>) =>
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

  it.effect("reads AUDIT_SINK (stdout by default), AUDIT_LOG_NAME and the project", () =>
    Effect.gen(function*() {
      expect(yield* AuditConfig.loadConfig.pipe(withEnv({}))).toEqual({ sink: "stdout", projectId: undefined })
      expect(yield* AuditConfig.loadConfig.pipe(withEnv({ GOOGLE_CLOUD_PROJECT: "p1" }))).toEqual({
        sink: "stdout",
        projectId: "p1"
      })
      expect(yield* AuditConfig.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp", GCP_PROJECT: "p2" }))).toEqual({
        sink: "gcp",
        projectId: "p2",
        logName: "altan-audit"
      })
      expect(
        yield* AuditConfig.loadConfig.pipe(
          withEnv({ AUDIT_SINK: "gcp", GOOGLE_CLOUD_PROJECT: "p3", AUDIT_LOG_NAME: "audit" })
        )
      ).toEqual({ sink: "gcp", projectId: "p3", logName: "audit" })
      expect(yield* AuditConfig.loadConfig.pipe(withEnv({ AUDIT_SINK: "none" }))).toEqual({ sink: "none" })

      const noProject = yield* Effect.flip(AuditConfig.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp" })))
      expect(String(noProject)).toContain("GCP_PROJECT")
      const badName = yield* Effect.flip(
        AuditConfig.loadConfig.pipe(withEnv({ AUDIT_SINK: "gcp", GCP_PROJECT: "p", AUDIT_LOG_NAME: "a/b" }))
      )
      expect(String(badName)).toContain("AUDIT_LOG_NAME")
      const unknown = yield* Effect.flip(AuditConfig.loadConfig.pipe(withEnv({ AUDIT_SINK: "syslog" })))
      expect(String(unknown)).toContain("AUDIT_SINK")

      // the configured layer records: with the stdout sink, one structured line per record
      const lines: Array<string> = []
      const write = process.stdout.write
      process.stdout.write = ((chunk: unknown) => (lines.push(String(chunk)), true)) as typeof process.stdout.write
      try {
        yield* record(entry("acme", 1)).pipe(
          Effect.provide(AuditConfig.layerFromConfig),
          withEnv({ AUDIT_SINK: "stdout" })
        )
      } finally {
        process.stdout.write = write
      }
      const audited = lines.map((l) => JSON.parse(l)).filter((l) => l.audit !== undefined)
      expect(audited).toHaveLength(1)
      expect(audited[0].audit).toMatchObject({ tenant_id: "acme", seq: 1 })
      const failed = yield* Effect.exit(
        record(entry("acme", 1)).pipe(Effect.provide(AuditConfig.layerFromConfig), withEnv({ AUDIT_SINK: "gcp" }))
      )
      expect(Exit.isFailure(failed)).toBe(true)
    }))
})
