import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import { type Cluster, type RedisServer, type Role, sleep, startCluster, startRedis } from "./fault/harness.js"
import { account, probeSessions, runLoad, setupTenant, summarize, violations } from "./fault/load.js"
import { startVendor, type Vendor } from "./fault/vendor.js"

/**
 * Fault tests of issue #11: real runner processes on a PostgreSQL database and a Redis server of this
 * file's own, a counting loopback vendor, load through the public API, and faults by pid (kill -9, SIGSTOP,
 * SIGTERM). Every scenario leaves the cluster in `topology` again for the next one.
 */
const topology: ReadonlyArray<Role> = ["integrator", "agent", "agent", "tool", "tool"]
const tenant = "faults"

let redis: RedisServer | undefined
let vendor: Vendor | undefined
let cluster: Cluster | undefined
let token = ""

const targets = () => cluster!.integratorBases()

/**
 * Waits until the cluster is settled: every runner registered by its current process, shards no longer
 * moving, and every probe session serving tasks.
 */
const settle = async (round: string) => {
  await cluster!.waitRegistered()
  await cluster!.waitBalanced()
  await cluster!.waitReady()
  const probe = await probeSessions({ targets, token, round, deadlineMs: 90_000 })
  if (probe.served !== probe.sessions.length) {
    throw new Error(`cluster not serving every probe session: ${JSON.stringify(probe.sessions)}\n${cluster!.dump()}`)
  }
  return probe
}

beforeAll(async () => {
  redis = await startRedis()
  vendor = await startVendor()
  cluster = await startCluster({
    name: "faults",
    env: { REDIS_URL: redis.url, EGRESS_ALLOW_HOSTS: vendor.host }
  })
  await cluster.startAll(topology)
  await cluster.waitReady()
  await cluster.waitRegistered()
  token = await cluster.token({ tenant, role: "admin" })
  await setupTenant({ base: targets()[0]!, adminToken: token, vendor })
  await settle("warmup")
}, 180_000)

afterAll(async () => {
  await cluster?.close()
  await redis?.close()
  await vendor?.close()
}, 60_000)

/** A lost task's session: its persisted messages, to tell "Submit processed, no Run" from others. */
const inspect = (taskId: string) => cluster!.messagesOf(`${tenant}/${taskId.slice(0, taskId.lastIndexOf("."))}`)

describe("faults under load (issue #11)", () => {
  /**
   * 60 two-step tasks: 40 at 10/s and a burst of 20 at 2 s (many submits in flight at once), kill -9 of an
   * agent runner 400 ms after the burst; the runner is restarted once failover is measured (as Kubernetes
   * would restart the pod) and rejoins, shards rebalancing, while the accounting runs.
   */
  it("kill -9 of an agent runner under load", async () => {
    onTestFailed(() => console.log(cluster!.dump()))
    await settle("before-kill-agent")
    const victim = cluster!.byRole("agent")[0]!
    const loadStart = Date.now()
    const load = runLoad({
      targets,
      token,
      prefix: `k9agent${Date.now().toString(36)}`,
      count: 60,
      ratePerSecond: 10,
      burst: { atMs: 2_000, count: 20 }
    })
    await sleep(loadStart + 2_400 - Date.now())
    const killedAt = Date.now()
    cluster!.kill(victim, "SIGKILL")
    // failover: time from the kill until every probe session (some of them on the victim's shards) ran a task
    const probe = probeSessions({ targets, token, round: "kill-agent", since: killedAt, deadlineMs: 45_000 })
    await victim.waitExit(5_000)
    const failover = await probe
    const restartedAt = Date.now()
    await cluster!.restart(victim)
    const rejoined = cluster!.waitRegistered([victim]).then(
      () => `${Date.now() - restartedAt} ms`,
      (e) => `never (${String(e).slice(0, 200)})`
    )
    const run = await load
    const report = await account({
      scenario: "kill -9 agent",
      run,
      vendor: vendor!,
      targets,
      token,
      deadlineMs: 30_000,
      inspect
    })
    report.failoverMs = failover.maxMs
    console.log(summarize(report, failover))
    if (report.lostTasks.length) console.log("lost:", JSON.stringify(report.lostTasks))
    if (report.vendor.repeated.length) console.log("repeated effects:", JSON.stringify(report.vendor.repeated))

    // back to the topology for the next scenario, whatever the assertions say
    console.log(`[fault] kill -9 agent: restarted runner registered after ${await rejoined}`)
    await settle("after-kill-agent")

    expect(cluster!.crashes(), "runners that exited without being killed").toEqual([])
    expect(report.accepted, "most submissions accepted").toBeGreaterThan(run.submissions.length / 2)
    expect(violations(report)).toEqual({
      lost: 0,
      duplicatedUnkeyed: 0,
      falseSuccess: 0,
      ranAlthoughRefused: 0,
      idempotencyMismatches: 0
    })
    expect(failover.maxMs, "failover within 10 s").toBeLessThan(10_000)
  }, 300_000)
})
