import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import {
  type Api,
  api,
  type Cluster,
  type RedisServer,
  type Runner,
  startCluster,
  startRedis,
  until
} from "./fault/harness.js"
import { plainPostTool, setupTenant } from "./fault/load.js"
import { startVendor, type Vendor } from "./fault/vendor.js"

/**
 * Approvals (issue #15) and sync tasks (#14: a sync task runs in its own `Submit`, without a `Run`) under faults: real
 * runner processes on a PostgreSQL database and a Redis of this file's own,
 * two agent runners, and kill -9 of the one holding the waiting task's session. The call waiting for approval is a
 * plain POST (no idempotency key) to the counting vendor: applied twice, it would show there.
 */
const tenant = "approvals"

let redis: RedisServer | undefined
let vendor: Vendor | undefined
let cluster: Cluster | undefined
let client: Api

beforeAll(async () => {
  redis = await startRedis()
  vendor = await startVendor({ minDelayMs: 50, maxDelayMs: 150 })
  cluster = await startCluster({
    name: "approvals",
    env: { REDIS_URL: redis.url, EGRESS_ALLOW_HOSTS: vendor.host }
  })
  await cluster.startAll(["integrator", "agent", "agent", "tool"])
  await cluster.waitReady()
  await cluster.waitRegistered()
  const token = await cluster.token({ tenant, role: "admin" })
  client = api(cluster.integratorBases()[0]!, token)
  await setupTenant({
    base: client.base,
    adminToken: token,
    vendor,
    settings: { approval_required: ["plain_post"] }
  })
}, 180_000)

afterAll(async () => {
  await cluster?.close()
  await redis?.close()
  await vendor?.close()
}, 60_000)

/** Submits a one-step task whose call waits for approval, and waits until it does. */
const waitingTask = async (
  marker: string,
  as: { readonly api: Api; readonly tenant: string } = { api: client, tenant }
) => {
  const submitted = await as.api.call("POST", "/v1/tasks", {
    input: { steps: [{ id: "a", tool: "plain_post", input: { marker, step: "a" } }] },
    mode: "async",
    idempotency_key: marker
  })
  expect([200, 202], submitted.text).toContain(submitted.status)
  const taskId: string = submitted.body.task_id
  const task = await until(`${taskId} waiting`, 60_000, async () => {
    const res = await as.api.call("GET", `/v1/tasks/${taskId}`)
    return res.body?.status === "waiting" ? res.body : undefined
  })
  return { taskId, hash: task.waiting_for[0].input_hash as string, session: `${as.tenant}/${task.session_id}` }
}

const finished = (taskId: string) =>
  until(`${taskId} finished`, 90_000, async () => {
    const res = await client.call("GET", `/v1/tasks/${taskId}`)
    return ["succeeded", "failed", "cancelled"].includes(res.body?.status) ? res.body : undefined
  }, { context: () => cluster!.dump() })

/** Starts a killed runner again (as Kubernetes would) and waits until it serves its shards. */
const restart = async (runner: Runner) => {
  await cluster!.restart(runner)
  await cluster!.waitRegistered()
}

/** Kills the agent runner holding the session (started again by the test once it has checked what it wanted). */
const killOwner = async (session: string): Promise<Runner> => {
  const owner = await until(`owner of ${session}`, 30_000, () => cluster!.runnerOf("agent", session))
  cluster!.kill(owner)
  await owner.waitExit()
  return owner
}

describe("approvals under faults", () => {
  it("a waiting task survives kill -9 of the runner holding it; approved afterwards, its call runs once", async () => {
    onTestFailed(() => console.log(cluster!.dump()))
    const marker = `wait-${Date.now().toString(36)}`
    const { hash, session, taskId } = await waitingTask(marker)
    const owner = await killOwner(session)
    // the session comes back on the other agent runner, from what Redis holds: still waiting, nothing called
    const approved = await until("approval taken", 90_000, async () => {
      const res = await client.call("POST", `/v1/tasks/${taskId}/steps/a/approve`, { input_hash: hash })
      return res.status === 200 ? res : undefined
    })
    expect(approved.body.steps[0].approval.decision).toBe("approved")
    const task = await finished(taskId)
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(vendor!.calls(marker, "a")).toBe(1)
    await restart(owner)
  }, 240_000)

  it("the runner holding the task is killed right after the approval: the call runs exactly once", async () => {
    onTestFailed(() => console.log(cluster!.dump()))
    const marker = `after-${Date.now().toString(36)}`
    const { hash, session, taskId } = await waitingTask(marker)
    const owner = await until(`owner of ${session}`, 30_000, () => cluster!.runnerOf("agent", session))
    const approved = await client.call("POST", `/v1/tasks/${taskId}/steps/a/approve`, { input_hash: hash })
    expect(approved.status, approved.text).toBe(200)
    // the decision is stored, and so is the run it wakes: whatever the dead runner had started, the task ends
    cluster!.kill(owner)
    await owner.waitExit()
    const task = await finished(taskId)
    expect(task.status, JSON.stringify(task)).toBe("succeeded")
    expect(task.steps[0]).toMatchObject({ status: "succeeded", approval: { decision: "approved" } })
    expect(vendor!.calls(marker, "a")).toBe(1)
    await restart(owner)
  }, 240_000)

  it("an undecided call expires at its deadline, held by the cluster's storage across a kill -9", async () => {
    onTestFailed(() => console.log(cluster!.dump()))
    // a tenant of its own, whose calls wait 4 s at most
    const token = await cluster!.token({ tenant: "approvals-expiry", role: "admin" })
    const expiry = api(client.base, token)
    await setupTenant({
      base: client.base,
      adminToken: token,
      vendor: vendor!,
      settings: { approval_required: ["plain_post"], approval_timeout: 4 }
    })
    const marker = `expire-${Date.now().toString(36)}`
    const { session, taskId } = await waitingTask(marker, { api: expiry, tenant: "approvals-expiry" })
    // the runner that holds the task, and the deadline's message, dies; the deadline still comes
    const owner = await killOwner(session)
    const task = await until(`${taskId} expired`, 90_000, async () => {
      const res = await expiry.call("GET", `/v1/tasks/${taskId}`)
      return res.body?.status === "failed" ? res.body : undefined
    }, { context: () => cluster!.dump() })
    expect(task.error.code).toBe("approval_expired")
    expect(task.steps[0].status).toBe("expired")
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(task.steps[0].approval.expires_at))
    expect(vendor!.calls(marker, "a")).toBe(0)
    await restart(owner)
  }, 240_000)
})

describe("connection waits under faults", () => {
  it(
    "a call waiting for its connection survives kill -9 of the runner holding it; connected, it runs once",
    async () => {
      onTestFailed(() => console.log(cluster!.dump()))
      // a tenant of its own, whose tool needs an API key it does not have yet
      const token = await cluster!.token({ tenant: "approvals-conn", role: "admin" })
      const conn = api(client.base, token)
      await setupTenant({ base: client.base, adminToken: token, vendor: vendor! })
      const tool = await conn.call("PUT", "/v1/tools/auth_post", {
        ...plainPostTool(vendor!),
        tool_id: "auth_post",
        auth: "api_key",
        provider: "vendorauth"
      })
      expect(tool.status, tool.text).toBe(200)
      const marker = `conn-${Date.now().toString(36)}`
      const submitted = await conn.call("POST", "/v1/tasks", {
        input: { steps: [{ id: "a", tool: "auth_post", input: { marker, step: "a" } }] },
        mode: "async"
      })
      expect(submitted.status, submitted.text).toBe(202)
      const taskId: string = submitted.body.task_id
      const waiting = await until(`${taskId} waiting`, 60_000, async () => {
        const res = await conn.call("GET", `/v1/tasks/${taskId}`)
        return res.body?.status === "waiting" ? res.body : undefined
      })
      expect(waiting.waiting_for[0]).toMatchObject({ kind: "connection", provider: "vendorauth", reason: "missing" })
      const owner = await killOwner(`approvals-conn/${waiting.session_id}`)
      // the key is stored while the session's runner is dead: the notice and the wake are persisted, and the task
      // goes on where its session comes back
      expect((await conn.call("PUT", "/v1/secrets/vendor_key", { value: "vk-1" })).status).toBe(204)
      const connected = await conn.call("PUT", "/v1/connections/vendorauth", { type: "api_key", secret: "vendor_key" })
      expect(connected.body?.status, connected.text).toBe("connected")
      const task = await until(`${taskId} finished`, 90_000, async () => {
        const res = await conn.call("GET", `/v1/tasks/${taskId}`)
        return ["succeeded", "failed", "cancelled"].includes(res.body?.status) ? res.body : undefined
      }, { context: () => cluster!.dump() })
      expect(task.status, JSON.stringify(task)).toBe("succeeded")
      expect(task.steps[0]).toMatchObject({ status: "succeeded", connection: { reason: "missing" } })
      expect(vendor!.calls(marker, "a")).toBe(1)
      await restart(owner)
    },
    240_000
  )
})

describe("sync tasks under faults", () => {
  it(
    "a sync task whose runner is killed mid-run is resumed by its redelivered Submit and answered, each effect once",
    async () => {
      onTestFailed(() => console.log(cluster!.dump()))
      const marker = `sync-${Date.now().toString(36)}`
      const session = `sync-${marker}`
      const owner = await until(`owner of ${session}`, 30_000, () => cluster!.runnerOf("agent", `${tenant}/${session}`))
      // four keyed POSTs in a chain, 50-150 ms each at the vendor; no Run message exists for a sync task
      const steps = ["a", "b", "c", "d"]
      const answer = client.call("POST", "/v1/tasks", {
        session_id: session,
        input: {
          steps: steps.map((id, i) => ({
            id,
            tool: "keyed_post",
            input: { marker, step: id },
            ...(i > 0 ? { depends_on: [steps[i - 1]] } : {})
          }))
        },
        timeout_ms: 120_000
      }, { timeoutMs: 150_000 })
      await until("step b reached the vendor", 30_000, async () => vendor!.calls(marker, "b") > 0 || undefined)
      cluster!.kill(owner)
      await owner.waitExit()
      // the edge's wait for the submit's answer outlives the runner: the other agent runner finishes the task
      const res = await answer
      expect(res.status, res.text).toBe(200)
      expect(res.body.status, res.text).toBe("succeeded")
      expect(res.body.steps.map((s: { status: string }) => s.status)).toEqual([
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded"
      ])
      // a step cut off mid-call may have been sent again, always under its one idempotency key: each effect applied once
      for (const step of steps) expect(vendor!.keys(marker, step).size, step).toBe(1)
      await cluster!.restart(owner)
      await cluster!.waitRegistered()
    },
    240_000
  )
})
