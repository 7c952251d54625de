import * as PgClient from "@effect/sql-pg/PgClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as jose from "jose"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { pruneSql } from "../src/MessageRetention.js"

/**
 * The three services as three OS processes on loopback, sharing one PostgreSQL database as cluster
 * storage: a task submitted over HTTP to the integrator runs on the agent runner, whose tool calls
 * go through the integrator's Connection entity to the tool runner.
 */
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const root = fileURLToPath(new URL("../../..", import.meta.url))
const database = `altan_test_${randomBytes(6).toString("hex")}`
const issuer = "https://idp.multi.test"
const audience = "altan-multi"

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    }).on("error", reject)
  })

const processes: Array<{ role: string; child: ChildProcess; output: Array<string> }> = []
let base = ""
let token = ""

const start = (role: string, env: Record<string, string>) => {
  const child = spawn(process.execPath, [
    "--conditions=@altan/source",
    "--import",
    "tsx",
    "packages/cluster/src/main.ts"
  ], {
    cwd: root,
    env: { ...process.env, ...env, ROLE: role, LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const output: Array<string> = []
  child.stdout!.on("data", (d) => output.push(String(d)))
  child.stderr!.on("data", (d) => output.push(String(d)))
  processes.push({ role, child, output })
}

const dump = () =>
  processes.map((p) => `--- ${p.role} (exit ${p.child.exitCode})\n${p.output.join("").slice(-3000)}`).join("\n")

beforeAll(async () => {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${database}`)
  await admin.end()
  const url = new URL(adminUrl)
  url.pathname = `/${database}`

  const { privateKey, publicKey } = await jose.generateKeyPair("ES256", { extractable: true })
  token = await new jose.SignJWT({ tenant_id: "acme", sub: "ops" })
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(issuer)
    .setAudience(audience)
    .setExpirationTime("10m")
    .sign(privateKey)
  const httpPort = await freePort()
  base = `http://127.0.0.1:${httpPort}`
  const common = {
    DATABASE_URL: url.toString(),
    HOST: "127.0.0.1",
    HTTP_HOST: "127.0.0.1",
    AUTH_PUBLIC_KEY: await jose.exportSPKI(publicKey),
    AUTH_ISSUER: issuer,
    AUTH_AUDIENCE: audience
  }
  start("integrator", { ...common, PORT: String(httpPort), RUNNER_PORT: String(await freePort()) })
  start("agent", { ...common, RUNNER_PORT: String(await freePort()) })
  start("tool", { ...common, RUNNER_PORT: String(await freePort()) })
}, 60_000)

afterAll(async () => {
  await Promise.all(processes.map(({ child }) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve()
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve()
      })
      child.kill("SIGTERM")
    })
  ))
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  await admin.end()
}, 30_000)

const until = async <A>(what: string, deadlineMs: number, attempt: () => Promise<A | undefined>): Promise<A> => {
  const deadline = Date.now() + deadlineMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const result = await attempt()
      if (result !== undefined) return result
    } catch (e) {
      last = e
    }
    if (processes.some((p) => p.child.exitCode !== null)) throw new Error(`a runner exited\n${dump()}`)
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`${what} did not happen in time (${String(last)})\n${dump()}`)
}

describe("three runners on PostgreSQL", () => {
  it("runs a structured task across the integrator, agent and tool runners", async () => {
    await until("integrator ready", 60_000, async () => {
      const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) })
      return res.status === 200 ? await res.json() : undefined
    })
    const plan = {
      steps: [
        { id: "parse", tool: "email.parse", input: { raw: "From: a@example.com\r\nSubject: Cross-runner\r\n\r\nhi" } },
        {
          id: "render",
          tool: "text.template",
          input: { template: "re: {{s}}", variables: { s: { $ref: "parse.output.subject" } } }
        }
      ]
    }
    const submitted = await until("task accepted", 60_000, async () => {
      const res = await fetch(`${base}/v1/tasks`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ input: plan, idempotency_key: "cross-runner-1", timeout_ms: 20_000 }),
        signal: AbortSignal.timeout(40_000)
      })
      return res.status === 200 || res.status === 202 ? await res.json() : undefined
    })
    const task = await until("task finished", 60_000, async () => {
      const res = await fetch(`${base}/v1/tasks/${submitted.task_id}`, {
        headers: { authorization: `Bearer ${token}` }
      })
      const body = res.status === 200 ? await res.json() : undefined
      return body && ["succeeded", "failed", "cancelled"].includes(body.status) ? body : undefined
    })
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(task.output).toEqual({ text: "re: Cross-runner" })

    // every runner registered itself in the shared storage
    const client = new pg.Client({ connectionString: new URL(`/${database}`, adminUrl).toString() })
    await client.connect()
    const runners = await client.query("SELECT address FROM cluster_runners")
    await client.end()
    expect(runners.rowCount).toBe(3)

    // retention: processed messages and their replies go, the rest stays
    const db = new URL(`/${database}`, adminUrl).toString()
    const counts = async () => {
      const c = new pg.Client({ connectionString: db })
      await c.connect()
      const { rows } = await c.query(
        "SELECT (SELECT count(*) FROM cluster_messages WHERE processed) AS processed, " +
          "(SELECT count(*) FROM cluster_messages WHERE NOT processed) AS pending, (SELECT count(*) FROM cluster_replies) AS replies"
      )
      await c.end()
      return {
        processed: Number(rows[0].processed),
        pending: Number(rows[0].pending),
        replies: Number(rows[0].replies)
      }
    }
    const before = await counts()
    expect(before.processed).toBeGreaterThanOrEqual(2) // the Submit and the Run
    const pruned = await Effect.runPromise(
      pruneSql({ before: Date.now() + 1000 }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(db) })))
    )
    expect(pruned).toBe(before.processed)
    const after = await counts()
    expect(after).toEqual({ processed: 0, pending: before.pending, replies: 0 })
  }, 180_000)
})
