import { pruneSql } from "@altan/storage/MessageRetention"
import * as PgClient from "@effect/sql-pg/PgClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as jose from "jose"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer as createHttpServer, type Server } from "node:http"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { freePort } from "./fault/harness.js"

/**
 * The three services as OS processes on loopback, sharing one PostgreSQL database as cluster
 * storage: a task submitted over HTTP to the integrator runs on the agent runner, whose tool calls
 * go through the integrator's Connection entity to a tool runner. The tool service runs as two
 * runners: one for utility and tenant tools, one dedicated to Slack (`SHARD_GROUPS=tool-slack`).
 */
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const root = fileURLToPath(new URL("../../..", import.meta.url))
const database = `altan_test_${randomBytes(6).toString("hex")}`
const issuer = "https://idp.multi.test"
const audience = "altan-multi"

const processes: Array<{ role: string; child: ChildProcess; output: Array<string> }> = []
let base = ""
let token = ""
let slack: Server
const slackReceived: Array<{ path: string; authorization: string | undefined; body: any }> = []

const start = (role: string, env: Record<string, string>) => {
  const child = spawn(process.execPath, [
    "--conditions=@altan/source",
    "--import",
    "tsx",
    "packages/cluster/src/main.ts"
  ], {
    cwd: root,
    env: { ...process.env, METRICS_PORT: "0", ...env, ROLE: role, LOG_LEVEL: "info" },
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
  slack = createHttpServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c) => chunks.push(c)).on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || "{}")
      slackReceived.push({ path: req.url!, authorization: req.headers.authorization, body })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ ok: true, channel: body.channel, ts: "1700000000.000200" }))
    })
  })
  await new Promise<void>((r) => slack.listen(0, "127.0.0.1", r))
  const slackHost = `127.0.0.1:${(slack.address() as { port: number }).port}`

  token = await new jose.SignJWT({ tenant_id: "acme", sub: "ops", role: "admin" })
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
    AUTH_AUDIENCE: audience,
    EGRESS_ALLOW_HOSTS: slackHost
  }
  start("integrator", { ...common, PORT: String(httpPort), RUNNER_PORT: String(await freePort()) })
  start("agent", { ...common, RUNNER_PORT: String(await freePort()) })
  start("tool", { ...common, SHARD_GROUPS: "tool", RUNNER_PORT: String(await freePort()) })
  start("tool", { ...common, SHARD_GROUPS: "tool-slack", RUNNER_PORT: String(await freePort()) })
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
  slack.closeAllConnections()
  await new Promise((r) => slack.close(r))
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
    expect(runners.rowCount).toBe(4)

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
    expect(before.processed).toBeGreaterThanOrEqual(1) // the Submit (a sync task runs in it), and what it sent
    const pruned = await Effect.runPromise(
      pruneSql({ before: Date.now() + 1000 }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(db) })))
    )
    expect(pruned).toBe(before.processed)
    const after = await counts()
    expect(after).toEqual({ processed: 0, pending: before.pending, replies: 0 })
  }, 180_000)

  it("runs Slack calls on the Slack-only tool runner", async () => {
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
    const slackUrl = `http://127.0.0.1:${(slack.address() as { port: number }).port}`
    expect((await api("PUT", "/v1/secrets/slack_bot", { value: "xoxb-acme" })).status).toBe(204)
    expect(
      (await api("PUT", "/v1/connections/slack", { type: "api_key", secret: "slack_bot", prefix: "Bearer " })).status
    )
      .toBe(200)
    expect((await api("PUT", "/v1/settings", { providers: { slack: { base_url: `${slackUrl}/api` } } })).status).toBe(
      200
    )

    // the dedicated runner registered for the Slack group alone, and the other tool runner without it
    const client = new pg.Client({ connectionString: new URL(`/${database}`, adminUrl).toString() })
    await client.connect()
    const { rows } = await client.query("SELECT runner FROM cluster_runners")
    await client.end()
    const groups = rows.map((r) => (JSON.parse(r.runner).groups as Array<string>).join(","))
    expect(groups.filter((g) => g.includes("tool-slack"))).toEqual(["tool-slack"])
    expect(groups).toContain("tool")

    const res = await api("POST", "/v1/tasks", {
      input: {
        steps: [{ id: "post", tool: "slack.post_message", input: { channel: "C1", text: "from the Slack runner" } }]
      },
      timeout_ms: 20_000
    })
    const task = await res.json()
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(task.output).toEqual({ channel: "C1", ts: "1700000000.000200" })
    expect(slackReceived).toEqual([{
      path: "/api/chat.postMessage",
      authorization: "Bearer xoxb-acme",
      body: { channel: "C1", text: "from the Slack runner" }
    }])
  }, 60_000)
})
