/**
 * Tenant setup, a bounded load of two-step tasks against the counting vendor, failover probes, and the
 * accounting of issue #11: accepted, terminal, lost, ran although refused, false success, duplicated
 * side effects, same task id on resubmission.
 */
import * as fs from "node:fs"
import { type Answer, call, sleep } from "./harness.js"
import type { Vendor, VendorStats } from "./vendor.js"

// ---------------------------------------------------------------------------------------------------
// Tenant setup

/** A plain side effect: POST to the vendor, no idempotency header (a repeat applies it twice). */
export const plainPostTool = (vendor: Vendor) => ({
  tool_id: "plain_post",
  name: "Plain POST",
  description: "POSTs {marker, step} to the counting vendor; not idempotent",
  parameters: [{ name: "marker", type: "string" }, { name: "step", type: "string" }],
  endpoint: `${vendor.url}/effect`,
  method: "POST",
  auth: "none"
})

/** The same POST with an idempotency key the vendor would deduplicate by. */
export const keyedPostTool = (vendor: Vendor) => ({
  ...plainPostTool(vendor),
  tool_id: "keyed_post",
  name: "Keyed POST",
  description: "POSTs {marker, step} to the counting vendor with an Idempotency-Key",
  idempotency_header: "Idempotency-Key"
})

/**
 * Allows the vendor in the tenant's egress allowlist and registers `plain_post` and `keyed_post`
 * (admin token). `settings` are merged into the settings written.
 */
export const setupTenant = async (options: {
  readonly base: string
  readonly adminToken: string
  readonly vendor: Vendor
  readonly settings?: Record<string, unknown>
}) => {
  const put = async (urlPath: string, body: unknown) => {
    const res = await call(options.base, "PUT", urlPath, { token: options.adminToken, body, timeoutMs: 30_000 })
    if (res.status !== 200) throw new Error(`PUT ${urlPath}: ${res.status} ${res.text || res.error}`)
    return res
  }
  await put("/v1/settings", { egress_allowlist: [options.vendor.host], ...options.settings })
  await put("/v1/tools/plain_post", plainPostTool(options.vendor))
  await put("/v1/tools/keyed_post", keyedPostTool(options.vendor))
}

// ---------------------------------------------------------------------------------------------------
// Load

/** Step `a` (plain POST), then step `b` (keyed POST) once `a` is done; asynchronous, keyed by the marker. */
export const twoStepRequest = (marker: string) => ({
  input: {
    steps: [
      { id: "a", tool: "plain_post", input: { marker, step: "a" } },
      { id: "b", tool: "keyed_post", input: { marker, step: "b" }, depends_on: ["a"] }
    ]
  },
  mode: "async",
  idempotency_key: `idem-${marker}`
})

export type AttemptKind = "submit" | "retry" | "resubmit"

export interface Attempt extends Answer {
  readonly kind: AttemptKind
  readonly target: string
  /** The task id of a 200/202 answer, or the one a 503 names in `details.task_id`. */
  readonly taskId: string | undefined
}

export interface Submission {
  readonly index: number
  readonly marker: string
  readonly key: string
  readonly request: Record<string, unknown>
  readonly attempts: Array<Attempt>
}

export const isAccepted = (a: Answer) => (a.status === 200 || a.status === 202) && typeof a.body?.task_id === "string"

/** The task id the first accepted answer gave, if any. */
export const acceptedTaskId = (s: Submission): string | undefined => s.attempts.find(isAccepted)?.taskId

export interface LoadOptions {
  /** Integrator base URLs, asked at every request (round robin), so a killed integrator can be left out. */
  readonly targets: () => ReadonlyArray<string>
  readonly token: string
  /** Marker prefix, unique per scenario: markers are `<prefix>-<index>`. */
  readonly prefix: string
  /** Tasks to submit (default 60). */
  readonly count?: number
  /** Target submission rate (default 10/s). */
  readonly ratePerSecond?: number
  /** No submission starts after this long (default: twice the nominal duration + 5 s). */
  readonly maxDurationMs?: number
  /** Per-request timeout (default 20 s; the edge itself answers 503 after 15 s). */
  readonly requestTimeoutMs?: number
  /**
   * Times a request answered 503 or not at all is sent again with the same idempotency key during the load,
   * 1 s apart, as a careful client would (default 0: the accounting resubmits refused ones afterwards).
   */
  readonly retries?: number
  /** The request for a marker (default `twoStepRequest`). */
  readonly request?: (marker: string) => Record<string, unknown>
  /**
   * `count` of the tasks sent at once, `atMs` after the start (the rest at `ratePerSecond`): many submits
   * in flight at one moment, e.g. just before a kill, to hit the window between a task being saved and its
   * run being scheduled.
   */
  readonly burst?: { readonly atMs: number; readonly count: number }
}

export interface LoadRun {
  readonly prefix: string
  readonly startedAt: number
  readonly endedAt: number
  readonly submissions: ReadonlyArray<Submission>
  /** Planned submissions not started because `maxDurationMs` passed. */
  readonly notIssued: number
}

let roundRobin = 0

/** One call to the next integrator (round robin); with none alive, an answer of status 0. */
const callNext = (
  targets: () => ReadonlyArray<string>,
  method: string,
  urlPath: string,
  options: Parameters<typeof call>[3]
): Promise<Answer & { readonly target: string }> => {
  const list = targets()
  if (list.length === 0) {
    const now = Date.now()
    return Promise.resolve({
      status: 0,
      body: undefined,
      text: "",
      headers: {},
      sentAt: now,
      latencyMs: 0,
      error: "no integrator alive",
      target: ""
    })
  }
  const target = list[roundRobin++ % list.length]!
  return call(target, method, urlPath, options).then((answer) => ({ ...answer, target }))
}

const submit = async (
  s: Submission,
  kind: AttemptKind,
  options: { readonly targets: () => ReadonlyArray<string>; readonly token: string; readonly timeoutMs: number }
) => {
  const answer = await callNext(options.targets, "POST", "/v1/tasks", {
    token: options.token,
    body: s.request,
    timeoutMs: options.timeoutMs
  })
  const taskId = typeof answer.body?.task_id === "string"
    ? answer.body.task_id
    : typeof answer.body?.error?.details?.task_id === "string"
    ? answer.body.error.details.task_id
    : undefined
  const attempt: Attempt = { ...answer, kind, taskId }
  s.attempts.push(attempt)
  return attempt
}

/** Submits `count` tasks at `ratePerSecond`; bounded by count and time; resolves when every request answered. */
export const runLoad = async (options: LoadOptions): Promise<LoadRun> => {
  const count = options.count ?? 60
  const rate = options.ratePerSecond ?? 10
  const maxDurationMs = options.maxDurationMs ?? Math.ceil((count / rate) * 2000) + 5_000
  const timeoutMs = options.requestTimeoutMs ?? 20_000
  const retries = options.retries ?? 0
  const makeRequest = options.request ?? twoStepRequest
  const startedAt = Date.now()
  const stopAt = startedAt + maxDurationMs
  const submissions: Array<Submission> = []
  const inFlight: Array<Promise<void>> = []
  let notIssued = 0
  const burst = options.burst && options.burst.count > 0 ? options.burst : undefined
  const steady = count - (burst?.count ?? 0)
  // when each submission is due: the steady ones at the rate, the burst's all at `atMs`, in time order
  const dueTimes = [
    ...Array.from({ length: steady }, (_, i) => (i * 1000) / rate),
    ...Array.from({ length: burst?.count ?? 0 }, () => burst!.atMs)
  ].sort((a, b) => a - b)
  for (let i = 0; i < count; i++) {
    const due = startedAt + dueTimes[i]!
    if (due > Date.now()) await sleep(due - Date.now())
    if (Date.now() > stopAt) {
      notIssued = count - i
      break
    }
    const marker = `${options.prefix}-${i}`
    const request = makeRequest(marker)
    const s: Submission = { index: i, marker, key: String(request.idempotency_key ?? ""), request, attempts: [] }
    submissions.push(s)
    inFlight.push((async () => {
      let attempt = await submit(s, "submit", { targets: options.targets, token: options.token, timeoutMs })
      for (let r = 0; r < retries && (attempt.status === 503 || attempt.status === 0); r++) {
        if (Date.now() + 1000 > stopAt + timeoutMs) break
        await sleep(1000)
        attempt = await submit(s, "retry", { targets: options.targets, token: options.token, timeoutMs })
      }
    })())
  }
  await Promise.all(inFlight)
  return { prefix: options.prefix, startedAt, endedAt: Date.now(), submissions, notIssued }
}

// ---------------------------------------------------------------------------------------------------
// Waiting for tasks

export interface TaskOutcome {
  readonly taskId: string
  polls: number
  /** HTTP status of the last poll (0: no answer). */
  lastHttp: number
  /** The task as last read. */
  task: any
  terminal: boolean
  /** When it was first seen terminal. */
  terminalAt: number | undefined
}

const terminalStatuses = new Set(["succeeded", "failed", "cancelled"])

/**
 * Polls `GET /v1/tasks/{id}` for every task until it is terminal or the deadline passes, at most
 * `concurrency` requests at once, each task every `intervalMs`; transient answers (no answer, 5xx, 429,
 * 404) are polled again.
 */
export const waitTerminal = async (
  taskIds: ReadonlyArray<string>,
  options: {
    readonly targets: () => ReadonlyArray<string>
    readonly token: string
    readonly deadlineMs?: number
    readonly intervalMs?: number
    readonly concurrency?: number
  }
): Promise<Map<string, TaskOutcome>> => {
  const deadline = Date.now() + (options.deadlineMs ?? 30_000)
  const interval = options.intervalMs ?? 750
  const outcomes = new Map<string, TaskOutcome>()
  const schedule = new Map<string, number>()
  for (const id of new Set(taskIds)) {
    outcomes.set(id, { taskId: id, polls: 0, lastHttp: 0, task: undefined, terminal: false, terminalAt: undefined })
    schedule.set(id, 0)
  }
  const worker = async () => {
    while (Date.now() < deadline) {
      let next: string | undefined
      let at = Infinity
      for (const [id, t] of schedule) {
        if (t < at) {
          at = t
          next = id
        }
      }
      if (next === undefined) return
      const now = Date.now()
      if (at > now) {
        await sleep(Math.min(at - now, deadline - now, 250))
        continue
      }
      schedule.set(next, Infinity) // claimed by this worker
      const outcome = outcomes.get(next)!
      const res = await callNext(options.targets, "GET", `/v1/tasks/${encodeURIComponent(next)}`, {
        token: options.token,
        timeoutMs: Math.max(1_000, Math.min(20_000, deadline - Date.now()))
      })
      outcome.polls++
      outcome.lastHttp = res.status
      if (res.status === 200) outcome.task = res.body
      if (res.status === 200 && terminalStatuses.has(res.body?.status)) {
        outcome.terminal = true
        outcome.terminalAt = Date.now()
        schedule.delete(next)
      } else {
        schedule.set(next, Date.now() + interval)
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency ?? 12 }, worker))
  return outcomes
}

// ---------------------------------------------------------------------------------------------------
// Failover probes

export interface ProbeSession {
  readonly session: string
  /** Time from `since` to its first successful task; undefined if none by the deadline. */
  servedAfterMs: number | undefined
  attempts: number
  lastHttp: number
}

export interface ProbeResult {
  readonly since: number
  readonly sessions: ReadonlyArray<ProbeSession>
  readonly served: number
  /** The slowest session's time to be served again: the failover time when `since` is the kill. */
  readonly maxMs: number | undefined
  readonly medianMs: number | undefined
}

/** Fixed session ids, hashed onto shards of every agent runner: 16 sessions leave a runner out with p < 2^-16. */
export const probeSessionIds = (count = 16) => Array.from({ length: count }, (_, i) => `probe-${i}`)

/**
 * Submits one short synchronous task (`text.template`, no vendor, run in the session; or `step`) to each probe
 * session, retrying with the same idempotency key until it succeeds or the deadline passes, and records for every
 * session the time from `since` until its task succeeded.
 *
 * Failover time = the maximum over the sessions: started at the kill, sessions on surviving runners
 * answer at once and those whose shards the killed runner held answer once a survivor took the shards
 * over and ran the task end to end (the edge, which checks the input with the tool service, and the agent; with a
 * `step` of a vendor tool, the integrator's Connection and a tool worker too). Robust without knowing
 * the shard assignment, as long as some probe session was on the killed runner (see `probeSessionIds`).
 */
export const probeSessions = async (options: {
  readonly targets: () => ReadonlyArray<string>
  readonly token: string
  /** Distinguishes this round's tasks (part of the idempotency key). */
  readonly round: string
  readonly sessions?: ReadonlyArray<string>
  readonly since?: number
  readonly deadlineMs?: number
  /** The probe task's one step (default `text.template`, no vendor), for a given session. */
  readonly step?: (session: string) => { readonly tool: string; readonly input: Record<string, unknown> }
}): Promise<ProbeResult> => {
  const since = options.since ?? Date.now()
  const deadline = Date.now() + (options.deadlineMs ?? 45_000)
  const sessions: Array<ProbeSession> = (options.sessions ?? probeSessionIds()).map((session) => ({
    session,
    servedAfterMs: undefined,
    attempts: 0,
    lastHttp: 0
  }))
  await Promise.all(sessions.map(async (p) => {
    const body = {
      session_id: p.session,
      input: {
        steps: [{
          id: "t",
          ...(options.step?.(p.session) ??
            { tool: "text.template", input: { template: "probe {{r}}", variables: { r: options.round } } })
        }]
      },
      mode: "sync",
      timeout_ms: 20_000,
      idempotency_key: `probe-${options.round}-${p.session}`
    }
    while (Date.now() < deadline) {
      p.attempts++
      const res = await callNext(options.targets, "POST", "/v1/tasks", {
        token: options.token,
        body,
        timeoutMs: Math.max(1_000, Math.min(40_000, deadline - Date.now()))
      })
      p.lastHttp = res.status
      if (res.status === 200 && res.body?.status === "succeeded") {
        p.servedAfterMs = Date.now() - since
        return
      }
      await sleep(250)
    }
  }))
  const times = sessions.flatMap((s) => (s.servedAfterMs === undefined ? [] : [s.servedAfterMs])).sort((a, b) => a - b)
  return {
    since,
    sessions,
    served: times.length,
    maxMs: times.length === sessions.length ? times[times.length - 1] : undefined,
    medianMs: times.length ? times[Math.floor(times.length / 2)] : undefined
  }
}

// ---------------------------------------------------------------------------------------------------
// Accounting

export interface Report {
  readonly scenario: string
  readonly submitted: number
  readonly notIssued: number
  /** First answers by HTTP status ("0": no answer). */
  readonly firstAnswers: Record<string, number>
  readonly accepted: number
  readonly succeeded: number
  readonly failed: number
  readonly cancelled: number
  readonly failuresByCode: Record<string, number>
  /** The failed tasks' steps that did not succeed: `<step>:<status>:<code>:<message>` and how many. */
  readonly failedSteps: Record<string, number>
  /** Accepted but not terminal by the deadline (or 404). */
  readonly lost: number
  readonly lostTasks: ReadonlyArray<{
    readonly taskId: string
    readonly marker: string
    readonly http: number
    readonly status: string | undefined
    /** `<step>:<status>/<attempts>` */
    readonly steps: string
    /** What the vendor received of the task's steps. */
    readonly vendorCalls: { readonly a: number; readonly b: number }
    readonly detail?: unknown
  }>
  /** Submissions never accepted whose answers included a 503. */
  readonly refused: number
  /** Of those, the ones whose marker the vendor saw before they were resubmitted. */
  readonly ranAlthoughRefused: number
  readonly ranAlthoughRefusedMarkers: ReadonlyArray<string>
  /** What `GET` said of the task id a 503 named, before the resubmission (e.g. `404`, `succeeded`). */
  readonly refusedTaskIds: Record<string, number>
  /** Submissions never accepted and never refused with 503 (no answer, 500...) whose marker the vendor saw. */
  readonly ranUnacknowledged: number
  /** Resubmissions of refused requests (same idempotency_key) and their outcome. */
  readonly resubmitted: number
  readonly resubmitAccepted: number
  readonly resubmitLost: number
  /** Keys whose accepted answers (and a 503's named task id) name more than one task id. */
  readonly idempotencyMismatches: number
  /** Succeeded tasks the vendor never saw step a or step b of. */
  readonly falseSuccess: number
  readonly falseSuccessTasks: ReadonlyArray<string>
  readonly vendor: VendorStats
  readonly submitLatencyMs: { readonly p50: number; readonly p99: number; readonly max: number }
  /** Time from the last submission answer until the last task was seen terminal. */
  readonly drainMs: number
  failoverMs?: number | undefined
  readonly durationMs: number
}

/** The counts issue #11 requires to be zero. */
export const violations = (r: Report) => ({
  lost: r.lost,
  duplicatedUnkeyed: r.vendor.duplicatedUnkeyed,
  falseSuccess: r.falseSuccess,
  ranAlthoughRefused: r.ranAlthoughRefused,
  idempotencyMismatches: r.idempotencyMismatches
})

const tally = (values: Iterable<string>) => {
  const out: Record<string, number> = {}
  for (const v of values) out[v] = (out[v] ?? 0) + 1
  return out
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : 0

const stepsOf = (task: any) =>
  Array.isArray(task?.steps)
    ? task.steps.map((s: any) => `${s.id}:${s.status}/${s.attempts}`).join(",")
    : ""

/**
 * After a load: waits (up to `deadlineMs`) for every accepted task to be terminal, then for the vendor to
 * go quiet; counts what ran although refused; resubmits every refused request with its idempotency key and
 * checks it names the same task as before; waits for those too; counts duplicated effects and false success
 * from the vendor's records of this run's markers.
 */
export const account = async (options: {
  readonly scenario: string
  readonly run: LoadRun
  readonly vendor: Vendor
  readonly targets: () => ReadonlyArray<string>
  readonly token: string
  readonly deadlineMs?: number
  /** Resubmit refused requests with their idempotency key (default true). */
  readonly resubmitRefused?: boolean
  /** What else to record of a lost task (e.g. its session's persisted messages, `Cluster.messagesOf`). */
  readonly inspect?: (taskId: string) => Promise<unknown>
}): Promise<Report> => {
  const { run, vendor } = options
  const ofRun = (marker: string | undefined) => marker !== undefined && marker.startsWith(`${run.prefix}-`)
  const accepted = run.submissions.filter((s) => acceptedTaskId(s) !== undefined)
  const outcomes = await waitTerminal(accepted.map((s) => acceptedTaskId(s)!), {
    targets: options.targets,
    token: options.token,
    deadlineMs: options.deadlineMs ?? 30_000
  })
  // refused tasks that run anyway may call the vendor a little after the accepted ones finished
  await vendor.waitQuiet(2_000, 10_000)

  const notAccepted = run.submissions.filter((s) => acceptedTaskId(s) === undefined)
  const refused = notAccepted.filter((s) => s.attempts.some((a) => a.status === 503))
  const ranAlthoughRefused = refused.filter((s) => vendor.saw(s.marker)).map((s) => s.marker)
  const ranUnacknowledged = notAccepted.filter((s) => !refused.includes(s) && vendor.saw(s.marker)).length

  // what the id a 503 named has become
  const refusedTaskIds: Array<string> = []
  for (const s of refused) {
    const named = s.attempts.find((a) => a.status === 503 && a.taskId)?.taskId
    if (!named) {
      refusedTaskIds.push("none named")
      continue
    }
    const res = await callNext(options.targets, "GET", `/v1/tasks/${encodeURIComponent(named)}`, {
      token: options.token
    })
    refusedTaskIds.push(res.status === 200 ? String(res.body?.status) : String(res.status))
  }

  // a client retrying a refused request with the same idempotency_key must get the same task
  const resubmitted: Array<Submission> = []
  if (options.resubmitRefused ?? true) {
    const keys = run.submissions.filter((s) => s.attempts.some((a) => a.status === 503))
    await Promise.all(keys.map(async (s) => {
      resubmitted.push(s)
      for (let i = 0; i < 3; i++) {
        const a = await submit(s, "resubmit", { targets: options.targets, token: options.token, timeoutMs: 20_000 })
        if (a.status !== 503 && a.status !== 0) break
        await sleep(1000)
      }
    }))
  }
  const idempotencyMismatches = run.submissions.filter((s) => {
    const ids = new Set(
      s.attempts.filter((a) => isAccepted(a) || (a.status === 503 && a.taskId)).map((a) => a.taskId)
    )
    return ids.size > 1
  }).length
  const resubmitIds = resubmitted.flatMap((s) => {
    const last = s.attempts.filter((a) => a.kind === "resubmit" && isAccepted(a))
    return last.length ? [last[last.length - 1]!.taskId!] : []
  }).filter((id) => !outcomes.has(id))
  const resubmitOutcomes = await waitTerminal(resubmitIds, {
    targets: options.targets,
    token: options.token,
    deadlineMs: 30_000
  })
  await vendor.waitQuiet(2_000, 10_000)

  const finals = [...outcomes.values()]
  const terminal = finals.filter((o) => o.terminal)
  const status = (o: TaskOutcome) => String(o.task?.status)
  const markerOf = new Map(run.submissions.flatMap((s) => s.attempts.map((a) => [a.taskId ?? "", s.marker] as const)))
  const lost = finals.filter((o) => !o.terminal)
  const allFinals = [...finals, ...resubmitOutcomes.values()]
  const falseSuccessTasks = allFinals.filter((o) => {
    if (!o.terminal || status(o) !== "succeeded") return false
    const marker = markerOf.get(o.taskId)
    return marker === undefined || vendor.calls(marker, "a") === 0 || vendor.calls(marker, "b") === 0
  }).map((o) => o.taskId)
  const latencies = run.submissions.map((s) => s.attempts[0]?.latencyMs ?? 0).sort((a, b) => a - b)
  const lastTerminal = Math.max(run.endedAt, ...terminal.map((o) => o.terminalAt ?? 0))
  return {
    scenario: options.scenario,
    submitted: run.submissions.length,
    notIssued: run.notIssued,
    firstAnswers: tally(run.submissions.map((s) => String(s.attempts[0]?.status ?? "none"))),
    accepted: accepted.length,
    succeeded: terminal.filter((o) => status(o) === "succeeded").length,
    failed: terminal.filter((o) => status(o) === "failed").length,
    cancelled: terminal.filter((o) => status(o) === "cancelled").length,
    failuresByCode: tally(
      terminal.filter((o) => status(o) === "failed").map((o) => String(o.task?.error?.code ?? "unknown"))
    ),
    failedSteps: tally(
      terminal.filter((o) => status(o) === "failed").flatMap((o) =>
        (o.task?.steps ?? []).filter((st: any) => st.status !== "succeeded" && st.error).map((st: any) =>
          `${st.id}:${st.status}:${st.error.code}:${String(st.error.message).slice(0, 120)}`
        )
      )
    ),
    lost: lost.length,
    lostTasks: await Promise.all(lost.map(async (o) => {
      const marker = markerOf.get(o.taskId) ?? ""
      return {
        taskId: o.taskId,
        marker,
        http: o.lastHttp,
        status: o.task?.status,
        steps: stepsOf(o.task),
        vendorCalls: { a: vendor.calls(marker, "a"), b: vendor.calls(marker, "b") },
        ...(options.inspect ? { detail: await options.inspect(o.taskId).catch((e) => String(e)) } : {})
      }
    })),
    refused: refused.length,
    ranAlthoughRefused: ranAlthoughRefused.length,
    ranAlthoughRefusedMarkers: ranAlthoughRefused,
    refusedTaskIds: tally(refusedTaskIds),
    ranUnacknowledged,
    resubmitted: resubmitted.length,
    resubmitAccepted: resubmitted.filter((s) => s.attempts.some((a) => a.kind === "resubmit" && isAccepted(a)))
      .length,
    resubmitLost: [...resubmitOutcomes.values()].filter((o) => !o.terminal).length,
    idempotencyMismatches,
    falseSuccess: falseSuccessTasks.length,
    falseSuccessTasks,
    vendor: vendor.stats((r) => ofRun(r.marker)),
    submitLatencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? 0 },
    drainMs: lastTerminal - run.endedAt,
    durationMs: Date.now() - run.startedAt
  }
}

const fmt = (r: Record<string, number>) => Object.entries(r).map(([k, v]) => `${k}:${v}`).join(",") || "-"

/**
 * One line with every count, to quote figures; also appended as JSON to the file named by
 * `FAULT_REPORT`, if set.
 */
export const summarize = (report: Report, probe?: ProbeResult): string => {
  const v = report.vendor
  const line = `[fault] ${report.scenario}: submitted=${report.submitted} answers={${fmt(report.firstAnswers)}} ` +
    `accepted=${report.accepted} succeeded=${report.succeeded} failed=${report.failed}{${
      fmt(report.failuresByCode)
    }} ` +
    `cancelled=${report.cancelled} lost=${report.lost} refused=${report.refused} ` +
    `ran_although_refused=${report.ranAlthoughRefused} refused_ids={${fmt(report.refusedTaskIds)}} ` +
    `ran_unacknowledged=${report.ranUnacknowledged} resubmitted=${report.resubmitted}` +
    `(accepted=${report.resubmitAccepted},lost=${report.resubmitLost}) ` +
    `idempotency_mismatches=${report.idempotencyMismatches} false_success=${report.falseSuccess} ` +
    `vendor_calls=${v.calls} dup_unkeyed=${v.duplicatedUnkeyed}(+${v.duplicatedUnkeyedCalls} calls) ` +
    `dup_keyed=${v.duplicatedKeyed}(+${v.duplicatedKeyedCalls} calls) multi_key=${v.multipleKeys} ` +
    `distinct_effects=${v.distinctEffects} ` +
    `failover_ms=${report.failoverMs ?? probe?.maxMs ?? "n/a"}` +
    (probe ? ` probes=${probe.served}/${probe.sessions.length}(median ${probe.medianMs ?? "n/a"} ms)` : "") +
    ` submit_ms(p50=${report.submitLatencyMs.p50},p99=${report.submitLatencyMs.p99},max=${report.submitLatencyMs.max})` +
    ` drain_ms=${report.drainMs} duration_ms=${report.durationMs}`
  if (process.env.FAULT_REPORT) {
    fs.appendFileSync(
      process.env.FAULT_REPORT,
      JSON.stringify({ at: new Date().toISOString(), ...report, probe }) + "\n"
    )
  }
  return line
}
