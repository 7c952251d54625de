/**
 * Process-level control of a real Altan cluster for fault tests (issue #11): runner processes started
 * from source (`node --conditions=@altan/source --import tsx packages/cluster/src/main.ts`) on loopback,
 * one PostgreSQL database per cluster, optionally a Redis server of the test's own.
 *
 * Rules this module keeps:
 * - a process is only ever signalled by the pid this module started (`process.kill(pid, signal)`);
 * - everything started is killed by `close()` (stopped processes get SIGCONT first), by a process `exit`
 *   hook if the test process ends without it, and each runner exits by itself when its parent disappears;
 * - HTTP calls go to loopback addresses only (`call` refuses anything else).
 */
import * as jose from "jose"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { connect, createServer } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { shardGroups, shardsPerGroup } from "../../src/RuntimeConfig.js"

/** The library's string hash (`@effect/cluster` internal/hash.ts), which places an entity id on a shard. */
const hashString = (str: string) => {
  let h = 5381
  let i = str.length
  while (i) h = (h * 33) ^ str.charCodeAt(--i)
  return (h & 0xbfffffff) | ((h >>> 1) & 0x40000000)
}

/** The repository the test runs from. */
export const repoRoot = fileURLToPath(new URL("../../../..", import.meta.url))

/**
 * Where runner processes take their sources from: this repository, or `ALTAN_FAULT_ROOT` (e.g. an
 * unpacked `git archive` of another commit with its node_modules linked, to measure that code).
 */
export const runnerRoot = process.env.ALTAN_FAULT_ROOT ?? repoRoot

export const adminDatabaseUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const handedOut = new Set<number>()

/** A loopback port nothing listens on, never the same twice in this process (runners keep theirs across restarts). */
export const freePort = async (): Promise<number> => {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number }
        server.close(() => resolve(port))
      }).on("error", reject)
    })
    if (!handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
}

/** Polls `attempt` until it returns something other than `undefined`; errors count as "not yet". */
export const until = async <A>(
  what: string,
  timeoutMs: number,
  attempt: () => Promise<A | undefined>,
  options: { readonly intervalMs?: number; readonly context?: () => string } = {}
): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const result = await attempt()
      if (result !== undefined) return result
    } catch (e) {
      last = e
    }
    if (Date.now() >= deadline) break
    await sleep(Math.min(options.intervalMs ?? 250, Math.max(0, deadline - Date.now())))
  }
  throw new Error(
    `${what} did not happen within ${timeoutMs} ms${last === undefined ? "" : ` (last error: ${String(last)})`}` +
      (options.context ? `\n${options.context()}` : "")
  )
}

// ---------------------------------------------------------------------------------------------------
// Processes

export type Signal = "SIGKILL" | "SIGSTOP" | "SIGCONT" | "SIGTERM"

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly at: number
}

/** Every child this module started and that has not exited yet: killed on `close()` and at process exit. */
const live = new Map<number, ChildProcess>()

const killAllLive = () => {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, "SIGCONT")
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
}
process.once("exit", killAllLive)

// A test worker whose runner (e.g. the vitest main process) was killed keeps running, orphaned; then stop
// everything this module started and exit instead of running the scenarios on.
const testParent = process.ppid
setInterval(() => {
  if (process.ppid !== testParent) {
    killAllLive()
    // vitest makes `process.exit` throw inside tests; `reallyExit` is what it calls underneath
    const exit = (process as unknown as { reallyExit?: (code: number) => never }).reallyExit
    if (exit) exit(70)
    else process.exit(70)
  }
}, 1_000).unref()

/**
 * Imported into every runner before its main module: the runner exits when the process that started it
 * is gone (it was re-parented), so a crashed or killed test run leaves no runner behind.
 */
const watchdog = "data:text/javascript," + encodeURIComponent(
  "const parent = process.ppid; setInterval(() => { if (process.ppid !== parent) process.exit(70) }, 500).unref()"
)

/** The last `limit` bytes of a process's output, plus a full log file across restarts. */
class OutputTail {
  private chunks: Array<string> = []
  private size = 0
  constructor(readonly limit: number, readonly file: string | undefined) {}
  push(text: string) {
    this.chunks.push(text)
    this.size += text.length
    while (this.size > this.limit && this.chunks.length > 1) this.size -= this.chunks.shift()!.length
    if (this.file) fs.appendFileSync(this.file, text)
  }
  text() {
    const all = this.chunks.join("")
    return all.length > this.limit ? all.slice(-this.limit) : all
  }
}

/** One OS process we started: its pid, signals (by that pid only), exit and output. */
class Proc {
  readonly child: ChildProcess
  readonly pid: number
  readonly startedAt = Date.now()
  exit: Exit | undefined
  stopped = false
  /** Signals we sent, so an exit can be told apart from a crash. */
  readonly signals: Array<{ readonly signal: Signal; readonly at: number }> = []
  readonly exited: Promise<Exit>

  constructor(command: string, args: ReadonlyArray<string>, options: {
    readonly cwd: string
    readonly env: NodeJS.ProcessEnv
    readonly output: OutputTail
    readonly label: string
  }) {
    this.child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"] })
    if (this.child.pid === undefined) throw new Error(`could not start ${options.label}`)
    this.pid = this.child.pid
    options.output.push(`\n===== ${options.label} pid ${this.pid} started ${new Date(this.startedAt).toISOString()}\n`)
    live.set(this.pid, this.child)
    this.child.stdout!.on("data", (d) => options.output.push(String(d)))
    this.child.stderr!.on("data", (d) => options.output.push(String(d)))
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once("exit", (code, signal) => {
        live.delete(this.pid)
        this.exit = { code, signal, at: Date.now() }
        options.output.push(`\n===== ${options.label} pid ${this.pid} exited: code ${code} signal ${signal}\n`)
        resolve(this.exit)
      })
    })
  }

  get alive() {
    return this.exit === undefined
  }

  signal(signal: Signal) {
    if (!this.alive) return
    this.signals.push({ signal, at: Date.now() })
    process.kill(this.pid, signal)
    if (signal === "SIGSTOP") this.stopped = true
    if (signal === "SIGCONT") this.stopped = false
  }

  async waitExit(timeoutMs: number): Promise<Exit> {
    if (this.exit) return this.exit
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`pid ${this.pid} did not exit within ${timeoutMs} ms`)), timeoutMs)
        })
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  /** SIGCONT for a stopped process, then SIGKILL; waits for the exit. */
  async destroy(timeoutMs = 10_000) {
    if (!this.alive) return
    try {
      if (this.stopped) this.signal("SIGCONT")
      this.signal("SIGKILL")
    } catch {
      // exited meanwhile
    }
    await this.waitExit(timeoutMs).catch(() => undefined)
  }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

export interface Answer {
  /** HTTP status, or 0 when there was no answer (connection refused or reset, timeout). */
  readonly status: number
  /** Parsed JSON body, or undefined. */
  readonly body: any
  readonly text: string
  readonly headers: Record<string, string>
  readonly sentAt: number
  readonly latencyMs: number
  readonly error?: string
}

const loopback = new Set(["127.0.0.1", "localhost", "[::1]"])

/** Refuses any URL that is not on loopback: fault tests never send traffic elsewhere. */
export const assertLoopback = (url: string) => {
  const { hostname } = new URL(url)
  if (!loopback.has(hostname)) throw new Error(`fault tests only talk to loopback, not ${url}`)
}

/** One HTTP call; never throws: a missing answer is status 0 with `error`. */
export const call = async (
  base: string,
  method: string,
  urlPath: string,
  options: {
    readonly token?: string
    readonly body?: unknown
    readonly timeoutMs?: number
    readonly headers?: Record<string, string>
  } = {}
): Promise<Answer> => {
  const url = `${base}${urlPath}`
  assertLoopback(url)
  const sentAt = Date.now()
  try {
    const res = await fetch(url, {
      method,
      headers: {
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
        ...(options.body === undefined ? {} : { "content-type": "application/json" }),
        ...options.headers
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
      signal: AbortSignal.timeout(options.timeoutMs ?? 20_000)
    })
    const text = await res.text()
    let body: unknown
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = undefined
    }
    return {
      status: res.status,
      body,
      text,
      headers: Object.fromEntries(res.headers.entries()),
      sentAt,
      latencyMs: Date.now() - sentAt
    }
  } catch (e) {
    const error = e instanceof Error ? `${e.name}: ${e.message}${e.cause ? ` (${String(e.cause)})` : ""}` : String(e)
    return { status: 0, body: undefined, text: "", headers: {}, sentAt, latencyMs: Date.now() - sentAt, error }
  }
}

/** Calls to one base URL with one token. */
export interface Api {
  readonly base: string
  readonly call: (
    method: string,
    urlPath: string,
    body?: unknown,
    options?: { readonly timeoutMs?: number; readonly headers?: Record<string, string> }
  ) => Promise<Answer>
}

export const api = (base: string, token: string): Api => ({
  base,
  call: (method, urlPath, body, options) => call(base, method, urlPath, { token, body, ...options })
})

// ---------------------------------------------------------------------------------------------------
// Tokens

export interface Signer {
  readonly issuer: string
  readonly audience: string
  /** PEM (SPKI) public key for `AUTH_PUBLIC_KEY`. */
  readonly publicKeyPem: string
  readonly sign: (claims: {
    readonly tenant: string
    readonly role?: "admin" | "member"
    readonly sub?: string
    readonly expiresIn?: string
  }) => Promise<string>
}

/** An ES256 key pair and a signer of tokens the runners accept. */
export const makeSigner = async (issuer = "https://idp.faults.test", audience = "altan-faults"): Promise<Signer> => {
  const { privateKey, publicKey } = await jose.generateKeyPair("ES256", { extractable: true })
  return {
    issuer,
    audience,
    publicKeyPem: await jose.exportSPKI(publicKey),
    sign: ({ expiresIn = "2h", role = "member", sub = "fault-test", tenant }) =>
      new jose.SignJWT({ tenant_id: tenant, sub, role })
        .setProtectedHeader({ alg: "ES256" })
        .setIssuedAt()
        .setIssuer(issuer)
        .setAudience(audience)
        .setExpirationTime(expiresIn)
        .sign(privateKey)
  }
}

// ---------------------------------------------------------------------------------------------------
// Runners

export type Role = "agent" | "tool" | "integrator"

export interface RunnerSpec {
  readonly role: Role
  readonly name?: string
  /** Extra environment for this runner only (e.g. `SHARD_GROUPS`). */
  readonly env?: Record<string, string>
}

/** A runner process; `restart` keeps the object (same name, role, ports, env) and replaces the process. */
export class Runner {
  /** Every process this runner has been, oldest first. */
  readonly generations: Array<Proc> = []

  constructor(
    readonly name: string,
    readonly role: Role,
    readonly runnerPort: number,
    /** The public API port (integrators only). */
    readonly httpPort: number | undefined,
    readonly env: Record<string, string>,
    private readonly tail: OutputTail,
    /** The operator port (`METRICS_PORT`: `/metrics`, `/healthz`, `/readyz`), every role. */
    readonly metricsPort: number
  ) {}

  /** The runner's address as registered in `cluster_runners`. */
  get address() {
    return `127.0.0.1:${this.runnerPort}`
  }

  /** The public API (integrators only). */
  get base(): string {
    if (this.httpPort === undefined) throw new Error(`${this.name} serves no HTTP API`)
    return `http://127.0.0.1:${this.httpPort}`
  }

  /** The operator endpoints: `/metrics`, `/healthz`, `/readyz`. */
  get metricsBase(): string {
    return `http://127.0.0.1:${this.metricsPort}`
  }

  get current(): Proc {
    return this.generations[this.generations.length - 1]!
  }

  get pid() {
    return this.current.pid
  }

  get alive() {
    return this.current.alive
  }

  get stopped() {
    return this.current.stopped
  }

  get exit() {
    return this.current.exit
  }

  /** The last output (stdout and stderr interleaved, all generations). */
  output() {
    return this.tail.text()
  }

  /** The whole log of every generation, when the cluster keeps log files. */
  log() {
    return this.tail.file && fs.existsSync(this.tail.file) ? fs.readFileSync(this.tail.file, "utf8") : this.output()
  }

  /** Processes of this runner that exited although we sent them no SIGKILL/SIGTERM: crashes. */
  crashes(): Array<{ readonly pid: number; readonly exit: Exit }> {
    return this.generations.flatMap((p) =>
      p.exit && !p.signals.some((s) => s.signal === "SIGKILL" || s.signal === "SIGTERM")
        ? [{ pid: p.pid, exit: p.exit }]
        : []
    )
  }

  /** Sends `signal` to this runner's current pid (and only to it). */
  kill(signal: Signal = "SIGKILL") {
    this.current.signal(signal)
  }

  waitExit(timeoutMs = 15_000) {
    return this.current.waitExit(timeoutMs)
  }

  /** @internal */
  spawn(env: NodeJS.ProcessEnv) {
    const proc = new Proc(
      process.execPath,
      ["--conditions=@altan/source", "--import", "tsx", "--import", watchdog, "packages/cluster/src/main.ts"],
      { cwd: runnerRoot, env, output: this.tail, label: `${this.name} (generation ${this.generations.length + 1})` }
    )
    this.generations.push(proc)
    return proc
  }
}

export interface RegisteredRunner {
  readonly address: string
  readonly healthy: boolean
  /** How long ago its last heartbeat was (runners refresh it every `SHARD_LOCK_REFRESH_INTERVAL`). */
  readonly heartbeatAgeMs: number
  /** The heartbeat is younger than the lock expiry (6 s): the other runners count it in. */
  readonly fresh: boolean
  readonly groups: ReadonlyArray<string>
}

export interface ClusterOptions {
  /** Names the database (`altan_fault_<name>_<random>`) and log directory. */
  readonly name?: string
  /** Environment shared by every runner (over the defaults below), e.g. `REDIS_URL`, `EGRESS_ALLOW_HOSTS`. */
  readonly env?: Record<string, string>
  /** Bytes of each runner's output kept in memory for failure dumps (default 64 KiB). */
  readonly outputBytes?: number
  /** Keep the full logs after `close()` (also with `FAULT_KEEP_LOGS=1`). */
  readonly keepLogs?: boolean
  readonly signer?: Signer
}

/**
 * A cluster of runner processes on one PostgreSQL database of its own. Create with `startCluster`, add
 * runners with `start`/`startAll` (in parallel: each takes several seconds to boot under tsx), `close()`
 * in afterAll.
 */
export class Cluster {
  readonly runners: Array<Runner> = []
  private counters = new Map<string, number>()
  private closed = false

  constructor(
    readonly name: string,
    readonly database: string,
    readonly databaseUrl: string,
    readonly env: Record<string, string>,
    readonly signer: Signer,
    readonly logDir: string,
    private readonly options: ClusterOptions
  ) {}

  /** Starts one runner (does not wait for it to be ready). */
  async start(spec: Role | RunnerSpec): Promise<Runner> {
    if (this.closed) throw new Error("cluster closed")
    const { env = {}, role } = typeof spec === "string" ? { role: spec } : spec
    const n = (this.counters.get(role) ?? 0) + 1
    this.counters.set(role, n)
    const name = (typeof spec === "string" ? undefined : spec.name) ?? `${role}-${n}`
    const runnerPort = await freePort()
    const httpPort = role === "integrator" ? await freePort() : undefined
    const runner = new Runner(
      name,
      role,
      runnerPort,
      httpPort,
      env,
      new OutputTail(this.options.outputBytes ?? 64 * 1024, path.join(this.logDir, `${name}.log`)),
      await freePort()
    )
    this.runners.push(runner)
    runner.spawn(this.processEnv(runner))
    return runner
  }

  /** Starts runners in parallel. */
  startAll(specs: ReadonlyArray<Role | RunnerSpec>): Promise<Array<Runner>> {
    return Promise.all(specs.map((s) => this.start(s)))
  }

  private processEnv(runner: Runner): NodeJS.ProcessEnv {
    return {
      ...process.env,
      ...this.env,
      ...runner.env,
      ROLE: runner.role,
      RUNNER_PORT: String(runner.runnerPort),
      METRICS_PORT: String(runner.metricsPort),
      ...(runner.httpPort === undefined ? {} : { PORT: String(runner.httpPort) })
    }
  }

  byRole(role: Role): Array<Runner> {
    return this.runners.filter((r) => r.role === role)
  }

  get integrators() {
    return this.byRole("integrator")
  }

  /** Base URLs of the integrators whose process is alive (round-robin targets). */
  integratorBases(): Array<string> {
    return this.integrators.filter((r) => r.alive && !r.stopped).map((r) => r.base)
  }

  kill(runner: Runner, signal: Signal = "SIGKILL") {
    runner.kill(signal)
  }

  /**
   * Starts the runner again with the same role, ports and environment. A runner still alive is killed
   * first (SIGCONT + SIGKILL).
   */
  async restart(runner: Runner): Promise<Runner> {
    if (this.closed) throw new Error("cluster closed")
    if (runner.alive) await runner.current.destroy()
    // the ports were ours a moment ago; a listening socket is released at once when its process dies
    runner.spawn(this.processEnv(runner))
    return runner
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(runner: Runner, graceMs = 15_000): Promise<Exit> {
    if (!runner.alive) return runner.exit!
    if (runner.stopped) runner.kill("SIGCONT")
    runner.kill("SIGTERM")
    try {
      return await runner.waitExit(graceMs)
    } catch {
      await runner.current.destroy()
      return runner.exit!
    }
  }

  /** Waits until the integrator(s) answer `/readyz` with 200. */
  async waitReady(runners: Runner | ReadonlyArray<Runner> = this.integrators, timeoutMs = 90_000) {
    const list = Array.isArray(runners) ? runners : [runners as Runner]
    await Promise.all(list.map((r) =>
      until(`${r.name} ready`, timeoutMs, async () => {
        if (!r.alive) throw new Error(`${r.name} exited: ${JSON.stringify(r.exit)}`)
        const res = await call(r.base, "GET", "/readyz", { timeoutMs: 5_000 })
        return res.status === 200 ? true : undefined
      }, { context: () => this.dump() })
    ))
  }

  /** A query on the cluster's database. */
  /**
   * The runner holding an entity's shard (e.g. `ToolWorker` `faults/plain_post` in group `tool`), to kill the one
   * that matters: the shard as the library computes it (`Sharding.getShardId`), its advisory lock as
   * `SqlRunnerStorage` numbers it ((index of the group + 1) * 1,000,000 + shard, groups sorted by name), the
   * PostgreSQL backend holding that lock, and the runner process on the other end of that backend's connection.
   */
  async runnerOf(group: string, entityId: string): Promise<Runner | undefined> {
    const shard = Math.abs(hashString(entityId) % shardsPerGroup) + 1
    // the library sorts the groups (`ShardingConfig.shardGroupConfig`)
    const lock = ([...shardGroups].sort().indexOf(group) + 1) * 1_000_000 + shard
    const [row] = await this.sql<{ client_port: number | null }>(
      "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid " +
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1",
      [lock]
    )
    if (!row?.client_port) return undefined
    const sockets = execFileSync("ss", ["-tnpH", `sport = :${row.client_port}`]).toString()
    const pid = Number(/pid=(\d+)/.exec(sockets)?.[1])
    return this.runners.find((r) => r.alive && r.pid === pid)
  }

  async sql<Row extends Record<string, unknown> = Record<string, any>>(
    text: string,
    values: ReadonlyArray<unknown> = []
  ): Promise<Array<Row>> {
    const client = new pg.Client({ connectionString: this.databaseUrl })
    await client.connect()
    try {
      return (await client.query(text, values as Array<unknown>)).rows as Array<Row>
    } finally {
      await client.end()
    }
  }

  /** The runners registered in `cluster_runners` (empty before the first runner created the table). */
  async registeredRunners(): Promise<Array<RegisteredRunner>> {
    try {
      const rows = await this.sql(
        "SELECT address, healthy, runner, " +
          "(EXTRACT(EPOCH FROM (now()::timestamp - last_heartbeat)) * 1000)::float8 AS age_ms FROM cluster_runners"
      )
      return rows.map((row) => {
        let groups: ReadonlyArray<string> = []
        try {
          groups = JSON.parse(row.runner).groups ?? []
        } catch {
          // not JSON
        }
        const heartbeatAgeMs = Math.max(0, Number(row.age_ms))
        return { address: row.address, healthy: row.healthy, heartbeatAgeMs, fresh: heartbeatAgeMs < 6_000, groups }
      })
    } catch (e) {
      if (/does not exist/.test(String(e))) return []
      throw e
    }
  }

  /**
   * Waits until every given runner (default: every alive one) is registered by its current process: a
   * healthy row with a heartbeat written after that process started (a killed runner's row stays behind
   * until it ages out, so a row alone says nothing about a restarted runner).
   */
  async waitRegistered(runners: ReadonlyArray<Runner> = this.runners.filter((r) => r.alive), timeoutMs = 90_000) {
    await until(`runners registered (${runners.map((r) => r.name).join(", ")})`, timeoutMs, async () => {
      const dead = runners.find((r) => !r.alive)
      if (dead) throw new Error(`${dead.name} exited: ${JSON.stringify(dead.exit)}`)
      const rows = new Map((await this.registeredRunners()).map((r) => [r.address, r]))
      const now = Date.now()
      return runners.every((r) => {
          const row = rows.get(r.address)
          return row !== undefined && row.healthy && now - row.heartbeatAgeMs >= r.current.startedAt
        })
        ? true
        : undefined
    }, { intervalMs: 500, context: () => this.dump() })
  }

  /**
   * Shard locks (PostgreSQL advisory locks on this cluster's database) per holding backend: each runner
   * holds its shards through one connection, so there is one entry per runner that owns shards.
   */
  async shardLocks(): Promise<Array<{ readonly backend: number; readonly locks: number }>> {
    const rows = await this.sql(
      "SELECT pid, count(*)::int AS locks FROM pg_locks WHERE locktype = 'advisory' AND granted " +
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) GROUP BY pid ORDER BY pid"
    )
    return rows.map((r) => ({ backend: Number(r.pid), locks: Number(r.locks) }))
  }

  /**
   * Waits until every alive runner holds shards and the shard locks stayed the same for `stableMs`
   * (rebalancing after a join or a failover is over).
   */
  async waitBalanced(timeoutMs = 60_000, stableMs = 3_000) {
    let last = ""
    let since = Date.now()
    await until("shards balanced", timeoutMs, async () => {
      const locks = await this.shardLocks()
      const key = JSON.stringify(locks)
      if (key !== last) {
        last = key
        since = Date.now()
      }
      const expected = this.runners.filter((r) => r.alive).length
      return locks.length === expected && Date.now() - since >= stableMs ? locks : undefined
    }, { intervalMs: 500, context: () => `shard locks: ${last}` })
  }

  /** Persisted messages by entity type, tag and processed flag (e.g. `Run` messages never processed). */
  async messageCounts(): Promise<Array<{ entity_type: string; tag: string; processed: boolean; count: number }>> {
    const rows = await this.sql(
      "SELECT entity_type, tag, processed, count(*)::int AS count FROM cluster_messages " +
        "GROUP BY entity_type, tag, processed ORDER BY entity_type, tag, processed"
    )
    return rows as any
  }

  /**
   * The persisted messages of one entity (e.g. `AgentSession` `<tenant>/<session>`), oldest first, with
   * whether each was processed and has a reply: e.g. a lost task whose `Submit` is processed but has no `Run`.
   */
  async messagesOf(entityId: string): Promise<Array<string>> {
    const rows = await this.sql(
      "SELECT m.tag, m.processed, m.message_id, m.last_read IS NOT NULL AS read, " +
        "(SELECT count(*)::int FROM cluster_replies r WHERE r.request_id = m.request_id) AS replies " +
        "FROM cluster_messages m WHERE m.entity_id = $1 ORDER BY m.rowid",
      [entityId]
    )
    return rows.map((r) =>
      `${r.tag}${r.message_id ? `[${r.message_id}]` : ""} processed=${r.processed} read=${r.read} replies=${r.replies}`
    )
  }

  /** A token for `tenant` (default role `member`). */
  token(claims: Parameters<Signer["sign"]>[0]) {
    return this.signer.sign(claims)
  }

  /** Calls to an integrator (default: the first alive one). */
  api(token: string, runner?: Runner): Api {
    const base = runner?.base ?? this.integratorBases()[0]
    if (!base) throw new Error("no integrator alive")
    return api(base, token)
  }

  /** Runner processes that exited without our SIGKILL/SIGTERM. */
  crashes() {
    return this.runners.flatMap((r) => r.crashes().map((c) => ({ runner: r.name, ...c })))
  }

  /** The last `bytes` of every runner's output, for failure messages. */
  dump(bytes = 4000) {
    return this.runners.map((r) => {
      const state = r.alive ? (r.stopped ? "stopped" : "alive") : `exited ${JSON.stringify(r.exit)}`
      return `--- ${r.name} pid ${r.pid} ${r.address} (${state})\n${r.output().slice(-bytes)}`
    }).join("\n") + `\n(full logs: ${this.logDir})`
  }

  /** Kills every runner process (SIGCONT first for stopped ones), then drops the database. */
  async close() {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.runners.flatMap((r) => r.generations.map((p) => p.destroy())))
    const admin = new pg.Client({ connectionString: adminDatabaseUrl })
    await admin.connect()
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`)
    } finally {
      await admin.end()
    }
    if (!(this.options.keepLogs || process.env.FAULT_KEEP_LOGS === "1")) {
      fs.rmSync(this.logDir, { recursive: true, force: true })
    }
  }
}

/**
 * Creates a database of its own and the cluster's shared environment. Defaults: loopback addresses,
 * `AUDIT_SINK=none` (keeps the logs readable), admission limits far above any test load, `LOG_LEVEL=info`;
 * the cluster timings are the runtime's defaults (lock expiry 6 s, refresh 2 s).
 */
export const startCluster = async (options: ClusterOptions = {}): Promise<Cluster> => {
  const name = (options.name ?? "faults").replace(/[^a-z0-9_]/gi, "_").toLowerCase()
  const database = `altan_fault_${name}_${randomBytes(4).toString("hex")}`
  const admin = new pg.Client({ connectionString: adminDatabaseUrl })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${database}`)
  } finally {
    await admin.end()
  }
  const url = new URL(adminDatabaseUrl)
  url.pathname = `/${database}`
  const signer = options.signer ?? await makeSigner()
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), `altan-${name}-`))
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    HTTP_HOST: "127.0.0.1",
    LOG_LEVEL: "info",
    AUDIT_SINK: "none",
    ADMISSION_REQUESTS_PER_SECOND: "100000",
    ADMISSION_MAX_CONCURRENT_TASKS: "100000",
    ...options.env,
    DATABASE_URL: url.toString(),
    AUTH_PUBLIC_KEY: signer.publicKeyPem,
    AUTH_ISSUER: signer.issuer,
    AUTH_AUDIENCE: signer.audience
  }
  return new Cluster(name, database, url.toString(), env, signer, logDir, options)
}

// ---------------------------------------------------------------------------------------------------
// Redis of the test's own

/** One `PING` over a raw socket; true on `+PONG`. */
export const redisPing = (port: number, timeoutMs = 1_000) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port })
    let data = ""
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.on("error", () => done(false))
    socket.on("connect", () => socket.write("PING\r\n"))
    socket.on("data", (d) => {
      data += String(d)
      if (data.includes("\r\n")) done(data.startsWith("+PONG"))
    })
  })

/**
 * A `redis-server` on a free loopback port with AOF (`appendfsync everysec`, no RDB snapshots) in a
 * directory of its own; `kill` and `restart` it (same port and directory, so the AOF is replayed).
 */
export class RedisServer {
  readonly generations: Array<Proc> = []
  private closed = false

  constructor(readonly port: number, readonly dir: string, private readonly tail: OutputTail) {}

  get url() {
    return `redis://127.0.0.1:${this.port}`
  }

  get current() {
    return this.generations[this.generations.length - 1]!
  }

  get pid() {
    return this.current.pid
  }

  get alive() {
    return this.current.alive
  }

  output() {
    return this.tail.text()
  }

  /** Starts the server process and waits for `PING`. */
  async start(timeoutMs = 20_000) {
    if (this.closed) throw new Error("redis closed")
    if (this.generations.length > 0 && this.alive) throw new Error("redis is running")
    // with setpriv (util-linux), redis-server (same pid, exec'd) is killed when this process dies, whatever way
    const [command, prefix] = fs.existsSync("/usr/bin/setpriv")
      ? ["/usr/bin/setpriv", ["--pdeathsig", "KILL", "redis-server"]]
      : ["redis-server", []]
    const proc = new Proc(command, [
      ...prefix,
      "--bind",
      "127.0.0.1",
      "--port",
      String(this.port),
      "--appendonly",
      "yes",
      "--appendfsync",
      "everysec",
      "--dir",
      this.dir,
      "--save",
      "",
      "--daemonize",
      "no",
      "--logfile",
      ""
    ], { cwd: this.dir, env: process.env, output: this.tail, label: `redis :${this.port}` })
    this.generations.push(proc)
    await until(`redis on ${this.port} answers PING`, timeoutMs, async () => {
      if (!proc.alive) throw new Error(`redis-server exited: ${JSON.stringify(proc.exit)}\n${this.output()}`)
      return (await redisPing(this.port)) ? true : undefined
    }, { intervalMs: 100 })
    return this
  }

  kill(signal: Signal = "SIGKILL") {
    this.current.signal(signal)
  }

  waitExit(timeoutMs = 10_000) {
    return this.current.waitExit(timeoutMs)
  }

  /** Starts it again on the same port and directory (killing it first if it still runs). */
  async restart() {
    if (this.alive) await this.current.destroy()
    return this.start()
  }

  async close() {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.generations.map((p) => p.destroy()))
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

export const startRedis = async (options: { readonly port?: number; readonly outputBytes?: number } = {}) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-fault-redis-"))
  const server = new RedisServer(
    options.port ?? await freePort(),
    dir,
    new OutputTail(options.outputBytes ?? 16 * 1024, undefined)
  )
  return server.start()
}
