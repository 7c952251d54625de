import { Redis as IORedis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"
import {
  api,
  type Cluster,
  type RedisServer,
  type Role,
  type Runner,
  sleep,
  startCluster,
  startRedis
} from "./fault/harness.js"
import {
  acceptedTaskId,
  account,
  type LoadRun,
  probeSessions,
  type Report,
  runLoad,
  setupTenant,
  summarize,
  violations
} from "./fault/load.js"
import { startVendor, type Vendor } from "./fault/vendor.js"

/**
 * Fault tests of issue #11: real runner processes on a PostgreSQL database and a Redis server of this
 * file's own, a counting loopback vendor, load through the public API, and faults by pid (kill -9, SIGSTOP,
 * SIGTERM). Every scenario leaves the cluster in `topology` again for the next one.
 */
const topology: ReadonlyArray<Role> = ["integrator", "integrator", "agent", "agent", "tool", "tool"]
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

/**
 * Runs the scenario's load, applies `fault` while it runs (it returns when the fault is over, e.g. once the victim
 * is back), then accounts for every request; prints the summary line and checks the invariants that hold under
 * every fault: nothing accepted is lost, no side effect without an idempotency key is applied twice, nothing is
 * reported done that was not, nothing refused runs, one idempotency key is one task.
 */
const underLoad = async (
  scenario: string,
  fault: (load: { readonly startedAt: number }) => Promise<{ readonly failoverMs?: number | undefined } | void>,
  options: { readonly count?: number; readonly retries?: number; readonly burst?: boolean } = {}
): Promise<{ readonly report: Report; readonly run: LoadRun }> => {
  onTestFailed(() => console.log(cluster!.dump()))
  await settle(`before-${scenario}`)
  const startedAt = Date.now()
  const load = runLoad({
    targets,
    token,
    prefix: `${scenario.replace(/[^a-z0-9]/gi, "")}${Date.now().toString(36)}`,
    count: options.count ?? 60,
    ratePerSecond: 10,
    retries: options.retries ?? 0,
    ...(options.burst === false ? {} : { burst: { atMs: 2_000, count: 20 } })
  })
  const faulted = await fault({ startedAt })
  const run = await load
  const report = await account({ scenario, run, vendor: vendor!, targets, token, deadlineMs: 60_000, inspect })
  if (faulted && faulted.failoverMs !== undefined) report.failoverMs = faulted.failoverMs
  console.log(summarize(report))
  if (report.failed) console.log("failed steps:", JSON.stringify(report.failedSteps))
  if (report.lostTasks.length) console.log("lost:", JSON.stringify(report.lostTasks))
  if (report.vendor.repeated.length) console.log("repeated effects:", JSON.stringify(report.vendor.repeated))
  await settle(`after-${scenario}`)
  expect(cluster!.crashes(), "runners that exited without being killed").toEqual([])
  expect(report.accepted, "most submissions accepted").toBeGreaterThan(run.submissions.length / 2)
  expect(violations(report)).toEqual({
    lost: 0,
    duplicatedUnkeyed: 0,
    falseSuccess: 0,
    ranAlthoughRefused: 0,
    idempotencyMismatches: 0
  })
  return { report, run }
}

/**
 * Kills `victim` 2.4 s into the load, measures failover with probe sessions (whose one step is `probe`'s, by default
 * a `text.template`), then restarts it (as Kubernetes would).
 */
const killAndRestart = (
  victim: () => Runner | Promise<Runner>,
  probe?: (round: string) => (session: string) => { readonly tool: string; readonly input: Record<string, unknown> }
) =>
async ({ startedAt }: { readonly startedAt: number }) => {
  const runner = await victim()
  await sleep(startedAt + 2_400 - Date.now())
  const killedAt = Date.now()
  cluster!.kill(runner, "SIGKILL")
  const round = `kill-${runner.name}-${killedAt}`
  const probed = probeSessions({
    targets,
    token,
    round,
    since: killedAt,
    deadlineMs: 45_000,
    ...(probe ? { step: probe(round) } : {})
  })
  await runner.waitExit(5_000)
  const failover = await probed
  await cluster!.restart(runner)
  return { failoverMs: failover.maxMs }
}

describe("faults under load (issue #11)", () => {
  /**
   * 60 two-step tasks: 40 at 10/s and a burst of 20 at 2 s (many submits in flight at once), kill -9 of an
   * agent runner 400 ms after the burst; the runner is restarted once failover is measured (as Kubernetes
   * would restart the pod) and rejoins, shards rebalancing, while the accounting runs.
   */
  it("kill -9 of an agent runner under load", async () => {
    const { report } = await underLoad("kill -9 agent", killAndRestart(() => cluster!.byRole("agent")[0]!))
    // a session's runner dying cuts no tool call off (they run elsewhere and the resumed step joins them)
    expect(report.failed, JSON.stringify(report.failedSteps)).toBe(0)
    expect(report.failoverMs, "failover within 10 s").toBeLessThan(10_000)
  }, 300_000)

  it("kill -9 of a tool runner under load", async () => {
    // the tool runner that holds the plain POST tool, so calls are cut off mid-way; probed through that tool too
    let victim: Runner | undefined
    const { report } = await underLoad(
      "kill -9 tool",
      killAndRestart(
        async () => (victim = await cluster!.runnerOf("tool", `${tenant}/plain_post`)) ?? cluster!.byRole("tool")[0]!,
        (round) => (session) => ({ tool: "plain_post", input: { marker: `probe-${round}-${session}`, step: "probe" } })
      )
    )
    expect(victim?.role, "the tool runner holding plain_post was found").toBe("tool")
    // a call cut off on the killed runner fails its task as unknown_outcome, never silently and never twice
    expect(Object.keys(report.failuresByCode).filter((c) => c !== "unknown_outcome")).toEqual([])
    expect(report.failoverMs, "failover within 10 s").toBeLessThan(10_000)
  }, 300_000)

  it("kill -9 of an integrator under load, clients retrying on the other", async () => {
    const { report } = await underLoad(
      "kill -9 integrator",
      killAndRestart(() => cluster!.byRole("integrator")[0]!),
      { retries: 3 }
    )
    // the tool runners keep running what the dead integrator handed them, and the re-asks join it: nothing fails
    expect(report.failed, JSON.stringify(report.failedSteps)).toBe(0)
    expect(report.failoverMs, "failover within 10 s").toBeLessThan(10_000)
  }, 300_000)

  it("SIGSTOP of an agent runner past its shard locks' expiry", async () => {
    const { report, run } = await underLoad("SIGSTOP agent 16s", async ({ startedAt }) => {
      await sleep(startedAt + 2_400 - Date.now())
      const victim = cluster!.byRole("agent")[0]!
      cluster!.kill(victim, "SIGSTOP")
      await sleep(16_000)
      cluster!.kill(victim, "SIGCONT")
    }, { count: 80 })
    // accepted even while the session's runner is stopped: answered 202 once the submit is stored
    expect(report.refused).toBe(0)
    expect(run.submissions.every((s) => acceptedTaskId(s) !== undefined)).toBe(true)
    expect(report.failed).toBe(0)
  }, 300_000)

  it(
    "Redis killed and restarted (AOF everysec): 503 while it is away, every accepted task finishes correctly",
    async () => {
      const { report, run } = await underLoad("kill -9 redis", async ({ startedAt }) => {
        await sleep(startedAt + 2_400 - Date.now())
        await redis!.kill("SIGKILL")
        await redis!.waitExit()
        await sleep(4_000)
        await redis!.restart()
      }, { retries: 5 })
      const answers = run.submissions.flatMap((s) => s.attempts)
      // never an empty 500: refusals are 503 with the envelope and Retry-After
      expect(answers.filter((a) => a.status >= 500 && a.status !== 503).map((a) => `${a.status} ${a.text}`)).toEqual([])
      for (const a of answers.filter((a) => a.status === 503)) {
        expect(a.body?.error?.code, a.text).toBe("unavailable")
        expect(a.headers["retry-after"]).toMatch(/^\d+$/)
      }
      expect(report.failed, JSON.stringify(report.failuresByCode)).toBe(0)
      // the status the API shows is the status recorded in Redis
      const client = new IORedis(redis!.url)
      try {
        for (const s of run.submissions) {
          const taskId = acceptedTaskId(s)
          if (!taskId) continue
          const session = taskId.slice(0, taskId.lastIndexOf("."))
          const raw = await client.get(`altan:t:${tenant}:tr:{${tenant}/${session}}:${taskId}`)
          const res = await api(targets()[0]!, token).call("GET", `/v1/tasks/${taskId}`)
          expect(raw, taskId).not.toBeNull()
          expect(res.body?.status, taskId).toBe(JSON.parse(raw!).task.status)
        }
      } finally {
        client.disconnect()
      }
    },
    300_000
  )

  it("SIGTERM of an agent, a tool and an integrator runner (rolling restart) loses and fails nothing", async () => {
    const { report } = await underLoad("rolling SIGTERM", async ({ startedAt }) => {
      await sleep(startedAt + 1_500 - Date.now())
      for (const role of ["agent", "tool", "integrator"] as const) {
        const runner = cluster!.byRole(role)[0]!
        await cluster!.stop(runner, 60_000)
        await cluster!.restart(runner)
        await cluster!.waitRegistered([runner])
      }
    }, { count: 80, retries: 3, burst: false })
    expect(report.failed, JSON.stringify(report.failuresByCode)).toBe(0)
    expect(report.succeeded).toBe(report.accepted)
  }, 400_000)

  it("a single tool runner killed: a replacement restores service within 10 s of starting", async () => {
    onTestFailed(() => console.log(cluster!.dump()))
    await settle("before-single-tool")
    const [first, second] = cluster!.byRole("tool")
    await cluster!.stop(second!, 60_000)
    cluster!.kill(first!, "SIGKILL")
    await first!.waitExit(5_000)
    await sleep(2_000)
    const startedAt = Date.now()
    await cluster!.restart(first!)
    const round = `single-tool-${startedAt}`
    // probed through a tool the tool runner executes (a pure built-in like text.template runs in the session)
    const probe = await probeSessions({
      targets,
      token,
      round,
      since: startedAt,
      deadlineMs: 60_000,
      step: (session) => ({ tool: "plain_post", input: { marker: `probe-${round}-${session}`, step: "probe" } })
    })
    console.log(
      `[fault] single tool runner replaced: probes served ${probe.served}/${probe.sessions.length} after max ${probe.maxMs} ms from its start`
    )
    await cluster!.restart(second!)
    await settle("after-single-tool")
    expect(probe.maxMs, "service restored within 10 s of the replacement starting").toBeLessThan(10_000)
  }, 300_000)
})
