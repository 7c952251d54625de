import { canonicalJson } from "@altan/domain/Json"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { makeProbes, startEdge } from "./fixtures.js"

// Approval of tool calls over the public API: which calls wait, who may decide, a decision bound to the exact call,
// the call made once after its approval, and natural-language turns whose calls are decided one by one.

const probes = makeProbes()
let edge: Awaited<ReturnType<typeof startEdge>>
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let admin = ""
let ana = ""
let bob = ""
let otherTenant = ""

const hashOf = (tool: string, input: unknown) =>
  createHash("sha256").update(canonicalJson({ tool, input })).digest("hex")

beforeAll(async () => {
  fake = await startFakeOpenAi()
  edge = await startEdge(probes)
  admin = await edge.sign({ tenant_id: "appr", role: "admin", sub: "root" })
  ana = await edge.sign({ tenant_id: "appr", role: "member", sub: "ana" })
  bob = await edge.sign({ tenant_id: "appr", role: "member", sub: "bob" })
  otherTenant = await edge.sign({ tenant_id: "appr-other", role: "admin", sub: "eve" })
  expect((await edge.call("PUT", "/v1/secrets/llm_key", admin, { value: "sk-approvals" })).status).toBe(204)
  expect(
    (await edge.call("PUT", "/v1/llms/main", admin, {
      llm_id: "main",
      endpoint: fake.url,
      auth: { type: "api_key", key: "llm_key" }
    })).status
  ).toBe(200)
  // every call of probe.effect waits for a person
  const settings = await edge.call("PUT", "/v1/settings", admin, {
    default_llm: "main",
    approval_required: ["probe.effect"]
  })
  expect(settings.status, settings.text).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await fake.close()
})

const effectCalls = (label: string) =>
  probes.calls.filter((c) => c.tool === "probe.effect" && (c.input as { label: string }).label === label).length

/** The task's events until its stream ends (after its terminal event). */
const eventsOf = async (taskId: string, token = ana) => {
  const res = await edge.call("GET", `/v1/tasks/${taskId}/events`, token)
  return res.text.split("\n\n").filter((block) => block.startsWith("id:")).map((block) =>
    JSON.parse(block.slice(block.indexOf("data: ") + 6))
  )
}

/** The task as the API answers it now. */
const get = async (taskId: string, token = ana) => (await edge.call("GET", `/v1/tasks/${taskId}`, token)).body

const plan = (label: string) => ({
  input: {
    steps: [
      { id: "read", tool: "probe.echo", input: { value: "independent" } },
      { id: "write", tool: "probe.effect", input: { label } },
      { id: "after", tool: "probe.echo", input: { value: { $ref: "write.output.n" } }, depends_on: ["write"] }
    ]
  }
})

describe("approval of tool calls", () => {
  it("a plan's call waits; only the submitter or an admin decides, on the exact call; it then runs once", async () => {
    const submitted = await edge.call("POST", "/v1/tasks", ana, plan("p1"))
    // a sync request that reaches the wait answers 202 with the waiting task
    expect(submitted.status, submitted.text).toBe(202)
    const task = submitted.body
    expect(task.status).toBe("waiting")
    expect(task.steps.map((s: any) => [s.id, s.status])).toEqual([
      ["read", "succeeded"],
      ["write", "waiting_approval"],
      ["after", "pending"]
    ])
    const inputHash = hashOf("probe.effect", { label: "p1" })
    expect(task.waiting_for).toEqual([{
      step_id: "write",
      kind: "approval",
      tool: "probe.effect",
      input_hash: inputHash,
      expires_at: expect.any(String)
    }])
    expect(task.approval_required).toEqual(["probe.effect"])
    // the tenant set no approval_timeout: a day
    expect(Date.parse(task.waiting_for[0].expires_at) - Date.parse(task.steps[1].approval.requested_at)).toBe(
      86_400_000
    )
    expect(effectCalls("p1")).toBe(0)

    const approve = (token: string, body: unknown) =>
      edge.call("POST", `/v1/tasks/${task.task_id}/steps/write/approve`, token, body)
    // another member of the tenant may not; another tenant does not see the task
    const byBob = await approve(bob, { input_hash: inputHash })
    expect(byBob.status).toBe(403)
    expect(byBob.body.error.code).toBe("forbidden")
    expect((await approve(otherTenant, { input_hash: inputHash })).status).toBe(404)
    // the hash binds the approval to the call: another one is refused
    const stale = await approve(ana, { input_hash: hashOf("probe.effect", { label: "other" }) })
    expect(stale.status).toBe(409)
    expect(stale.body.error).toMatchObject({ code: "stale_input_hash", details: { input_hash: inputHash } })
    expect((await approve(ana, { input_hash: "not-a-hash" })).status).toBe(400)
    expect(effectCalls("p1")).toBe(0)

    const approved = await approve(ana, { input_hash: inputHash })
    expect(approved.status, approved.text).toBe(200)
    const events = await eventsOf(task.task_id)
    expect(events.map((e) => e.type)).toContain("approval.requested")
    expect(events.find((e) => e.type === "approval.requested").data).toMatchObject({
      step_id: "write",
      tool: "probe.effect",
      input: { label: "p1" },
      input_hash: inputHash
    })
    expect(events.find((e) => e.type === "approval.decided").data).toMatchObject({
      step_id: "write",
      decision: "approved",
      decided_by: "ana"
    })
    expect(events.at(-1).type).toBe("task.succeeded")
    const done = await get(task.task_id)
    expect(done).toMatchObject({ status: "succeeded", output: { value: 1 } })
    expect(done.waiting_for).toBeUndefined()
    expect(done.steps[1]).toMatchObject({
      status: "succeeded",
      approval: { decision: "approved", decided_by: "ana", input_hash: inputHash }
    })
    expect(effectCalls("p1")).toBe(1)

    // the same approval again is answered as before; another decision on a decided call is a conflict
    expect((await approve(ana, { input_hash: inputHash })).status).toBe(200)
    const late = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/write/reject`, admin, {})
    expect(late.status).toBe(409)
    expect(late.body.error.code).toBe("not_waiting")
    expect(effectCalls("p1")).toBe(1)

    // every decision is audited, and so is the refusal
    const decisions = edge.audit().filter((r) =>
      r.action === "approval.decision" && r.target === `task:${task.task_id}`
    )
    expect(decisions.map((r) => [r.user, r.outcome])).toEqual([["ana", "ok"]])
    expect(decisions[0]!.details).toMatchObject({ step_id: "write", decision: "approved", input_hash: inputHash })
    const refused = edge.audit().filter((r) => r.action === "authz.failure" && r.target.includes(task.task_id))
    expect(refused.map((r) => [r.user, r.outcome, r.target])).toEqual([
      ["bob", "denied", `POST /v1/tasks/${task.task_id}/steps/write/approve`]
    ])
  })

  it("a rejected call fails the plan's task naming the step; what depends on it is skipped", async () => {
    const task = (await edge.call("POST", "/v1/tasks", ana, { ...plan("p2"), mode: "async" })).body
    await probes.calledEffect("probe.echo")
    let waiting = await get(task.task_id)
    for (let i = 0; i < 100 && waiting.status !== "waiting"; i++) waiting = await get(task.task_id)
    expect(waiting.status).toBe("waiting")
    const rejected = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/write/reject`, admin, {
      reason: "not on a Friday"
    })
    expect(rejected.status, rejected.text).toBe(200)
    const events = await eventsOf(task.task_id)
    expect(events.at(-1).type).toBe("task.failed")
    const done = await get(task.task_id)
    expect(done.error).toMatchObject({ code: "approval_rejected", message: expect.stringContaining("\"write\"") })
    expect(done.error.message).toContain("not on a Friday")
    expect(done.steps.map((s: any) => s.status)).toEqual(["succeeded", "rejected", "skipped"])
    expect(done.steps[1].approval).toMatchObject({
      decision: "rejected",
      decided_by: "root",
      reason: "not on a Friday"
    })
    expect(effectCalls("p2")).toBe(0)
  })

  it("a decision that lands while the rest of the plan still runs is not lost: the approved call runs after", async () => {
    // another tenant, whose only rule is the task's own
    const member = await edge.sign({ tenant_id: "appr-running", role: "member", sub: "cy" })
    const task = (await edge.call("POST", "/v1/tasks", member, {
      input: {
        steps: [
          { id: "ask", tool: "probe.echo", input: { value: "approved while running" } },
          { id: "slow", tool: "probe.effect", input: { label: "running-slow", ms: 800 } }
        ]
      },
      approval_required: ["probe.echo"],
      mode: "async"
    })).body
    let now = await get(task.task_id, member)
    for (let i = 0; i < 100 && now.steps[0].status !== "waiting_approval"; i++) now = await get(task.task_id, member)
    expect(now.steps.map((s: any) => s.status)).toEqual(["waiting_approval", "running"])
    const approved = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/ask/approve`, member, {
      input_hash: now.steps[0].approval.input_hash
    })
    expect(approved.status, approved.text).toBe(200)
    // the run in flight ends after the slow step, and goes round again for the approved call
    expect((await eventsOf(task.task_id, member)).at(-1).type).toBe("task.succeeded")
    const done = await get(task.task_id, member)
    expect(done.steps.map((s: any) => s.status)).toEqual(["succeeded", "succeeded"])
    expect(done.output).toEqual({ label: "running-slow", n: 1 })
  })

  it("an approver may edit the input: checked against the tool's schema, hashed anew, run as edited", async () => {
    const task = (await edge.call("POST", "/v1/tasks", ana, plan("p3"))).body
    expect(task.status).toBe("waiting")
    const inputHash = task.waiting_for[0].input_hash
    const url = `/v1/tasks/${task.task_id}/steps/write/approve`
    const wrong = await edge.call("POST", url, ana, { input_hash: inputHash, input: { label: 5 } })
    expect(wrong.status).toBe(400)
    expect(wrong.body.error.code).toBe("invalid_tool_input")
    expect(wrong.body.error.details.field).toBe("input.label")
    expect((await get(task.task_id)).status).toBe("waiting")

    const edited = await edge.call("POST", url, ana, { input_hash: inputHash, input: { label: "p3-edited" } })
    expect(edited.status, edited.text).toBe(200)
    expect((await eventsOf(task.task_id)).at(-1).type).toBe("task.succeeded")
    const done = await get(task.task_id)
    expect(done.steps[1]).toMatchObject({
      status: "succeeded",
      input: { label: "p3-edited" },
      approval: { edited: true, input_hash: hashOf("probe.effect", { label: "p3-edited" }) }
    })
    expect(effectCalls("p3")).toBe(0)
    expect(effectCalls("p3-edited")).toBe(1)
  })

  it("a task may ask for more approvals than the tenant's, and a tool may require them itself", async () => {
    const own = await edge.call("POST", "/v1/tasks", ana, {
      input: { steps: [{ id: "e", tool: "probe.echo", input: { value: "ask me" } }] },
      approval_required: ["probe.echo"]
    })
    expect(own.status).toBe(202)
    expect(own.body.approval_required).toEqual(["probe.effect", "probe.echo"])
    expect(own.body.steps[0].status).toBe("waiting_approval")

    // the tenant's approval_timeout sets the deadline of what it accepts from then on
    const withTimeout = await edge.call("PUT", "/v1/settings", admin, {
      default_llm: "main",
      approval_required: ["probe.effect"],
      approval_timeout: 120
    })
    expect(withTimeout.status, withTimeout.text).toBe(200)
    const short = (await edge.call("POST", "/v1/tasks", ana, plan("timeout"))).body
    const { expires_at, requested_at } = short.steps[1].approval
    expect(Date.parse(expires_at) - Date.parse(requested_at)).toBe(120_000)
    await edge.call("POST", `/v1/tasks/${short.task_id}/cancel`, ana)
    expect(
      (await edge.call("PUT", "/v1/settings", admin, { default_llm: "main", approval_required: ["probe.effect"] }))
        .status
    ).toBe(200)

    const put = await edge.call("PUT", "/v1/tools/guarded_read", admin, {
      tool_id: "guarded_read",
      name: "guarded read",
      description: "A read someone must allow.",
      parameters: [{ name: "q", type: "string" }],
      endpoint: "http://127.0.0.1:9/never",
      method: "GET",
      auth: "none",
      requires_approval: true
    })
    expect(put.status, put.text).toBe(200)
    expect(put.body.requires_approval).toBe(true)
    const guarded = await edge.call("POST", "/v1/tasks", ana, {
      input: { steps: [{ id: "g", tool: "guarded_read", input: { q: "x" } }] }
    })
    expect(guarded.status).toBe(202)
    expect(guarded.body.steps[0].status).toBe("waiting_approval")
    // cancelling a waiting task ends it
    const cancelled = await edge.call("POST", `/v1/tasks/${guarded.body.task_id}/cancel`, ana)
    expect(cancelled.body.status).toBe("cancelled")
    expect(cancelled.body.steps[0].status).toBe("cancelled")
    expect(cancelled.body.waiting_for).toBeUndefined()
    // and it is no longer listed as waiting
    const listed = (await edge.call("GET", "/v1/approvals?limit=100", admin)).body.approvals
    expect(listed.map((a: any) => a.task_id)).not.toContain(guarded.body.task_id)
  })

  it("GET /v1/approvals lists what waits, oldest first, page by page: all for an admin, their own for a member", async () => {
    const first = (await edge.call("POST", "/v1/tasks", ana, plan("l1"))).body
    const second = (await edge.call("POST", "/v1/tasks", bob, plan("l2"))).body
    expect([first.status, second.status]).toEqual(["waiting", "waiting"])
    const ours = new Set([first.task_id, second.task_id])
    const list = async (token: string, query = "") => {
      const res = await edge.call("GET", `/v1/approvals${query}`, token)
      expect(res.status, res.text).toBe(200)
      return res.body
    }
    const all = (await list(admin, "?status=pending&limit=100")).approvals.filter((a: any) => ours.has(a.task_id))
    expect(all).toEqual([
      {
        task_id: first.task_id,
        session_id: first.session_id,
        step_id: "write",
        tool: "probe.effect",
        input: { label: "l1" },
        input_hash: hashOf("probe.effect", { label: "l1" }),
        requested_at: expect.any(String),
        expires_at: expect.any(String),
        user_id: "ana"
      },
      expect.objectContaining({ task_id: second.task_id, user_id: "bob", input: { label: "l2" } })
    ])
    // one at a time, with the cursor
    const seen: Array<string> = []
    let cursor: string | undefined
    for (let i = 0; i < 50; i++) {
      const page = await list(admin, `?limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
      expect(page.approvals.length).toBeLessThanOrEqual(1)
      seen.push(...page.approvals.map((a: any) => a.task_id))
      cursor = page.next_cursor
      if (cursor === undefined) break
    }
    expect(seen.filter((id) => ours.has(id))).toEqual([first.task_id, second.task_id])
    // a member sees what they may decide; another tenant nothing of this one
    expect((await list(ana)).approvals.filter((a: any) => ours.has(a.task_id)).map((a: any) => a.task_id)).toEqual([
      first.task_id
    ])
    expect((await list(bob)).approvals.map((a: any) => a.user_id)).toEqual(["bob"])
    expect((await list(otherTenant)).approvals).toEqual([])
    expect((await edge.call("GET", "/v1/approvals?status=done", admin)).status).toBe(400)
    // decided: no longer listed
    const approved = await edge.call("POST", `/v1/tasks/${first.task_id}/steps/write/approve`, ana, {
      input_hash: hashOf("probe.effect", { label: "l1" })
    })
    expect(approved.status).toBe(200)
    await eventsOf(first.task_id)
    const after = (await list(admin, "?limit=100")).approvals.filter((a: any) => ours.has(a.task_id))
    expect(after.map((a: any) => a.task_id)).toEqual([second.task_id])
  })

  it("a natural-language turn's two calls are decided each on its own, in any order, by step id", async () => {
    fake.script(
      {
        kind: "tools",
        calls: [
          { name: "probe-effect", arguments: `{"label": "nl-a"}` },
          { name: "probe-effect", arguments: `{"label": "nl-b"}` }
        ]
      },
      { kind: "answer", content: "both written" }
    )
    const task = (await edge.call("POST", "/v1/tasks", ana, { input: "write a and b", tools: ["probe.effect"] })).body
    expect(task.status, JSON.stringify(task)).toBe("waiting")
    expect(task.waiting_for.map((w: any) => w.step_id)).toEqual(["1.1", "1.2"])
    const [a, b] = task.waiting_for
    expect(a.input_hash).toBe(hashOf("probe.effect", { label: "nl-a" }))

    // the second call first: it runs at once, the task still waits for the first
    const second = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/1.2/approve`, ana, {
      input_hash: b.input_hash
    })
    expect(second.status, second.text).toBe(200)
    await probes.calledEffect("probe.effect")
    let now = await get(task.task_id)
    for (let i = 0; i < 100 && now.status !== "waiting"; i++) now = await get(task.task_id)
    expect(now.status).toBe("waiting")
    expect(now.steps.map((s: any) => s.status)).toEqual(["waiting_approval", "succeeded"])
    expect(effectCalls("nl-b")).toBe(1)
    expect(effectCalls("nl-a")).toBe(0)
    expect(fake.received).toHaveLength(1)

    const first = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/1.1/approve`, ana, {
      input_hash: a.input_hash
    })
    expect(first.status, first.text).toBe(200)
    expect((await eventsOf(task.task_id)).at(-1).type).toBe("task.succeeded")
    expect((await get(task.task_id)).output).toBe("both written")
    expect([effectCalls("nl-a"), effectCalls("nl-b")]).toEqual([1, 1])
    // the model was asked twice (no turn before every call of the first had its result); each result went back
    // under its own call's id
    expect(fake.received).toHaveLength(2)
    const toolMessages = fake.received[1]!.body.messages.filter((m: any) => m.role === "tool")
    const assistant = fake.received[1]!.body.messages.find((m: any) => m.role === "assistant" && m.tool_calls)
    const idOf = (label: string) =>
      assistant.tool_calls.find((c: any) => JSON.parse(c.function.arguments).label === label).id
    expect(JSON.parse(toolMessages.find((m: any) => m.tool_call_id === idOf("nl-a")).content)).toMatchObject({
      output: { label: "nl-a" }
    })
    expect(JSON.parse(toolMessages.find((m: any) => m.tool_call_id === idOf("nl-b")).content)).toMatchObject({
      output: { label: "nl-b" }
    })
  })

  it("a rejected call of a natural-language task is told to the model, which goes on", async () => {
    fake.script(
      { kind: "tools", calls: [{ name: "probe-effect", arguments: `{"label": "nl-no"}` }] },
      { kind: "answer", content: "understood, nothing written" }
    )
    const task = (await edge.call("POST", "/v1/tasks", ana, { input: "write no", tools: ["probe.effect"] })).body
    expect(task.status).toBe("waiting")
    const rejected = await edge.call("POST", `/v1/tasks/${task.task_id}/steps/1.1/reject`, ana, {
      reason: "wrong account"
    })
    expect(rejected.status, rejected.text).toBe(200)
    expect((await eventsOf(task.task_id)).at(-1).type).toBe("task.succeeded")
    const done = await get(task.task_id)
    expect(done.output).toBe("understood, nothing written")
    expect(done.steps[0].status).toBe("rejected")
    const told = fake.received[1]!.body.messages.find((m: any) => m.role === "tool")
    expect(told.content).toContain("approval_rejected")
    expect(told.content).toContain("wrong account")
    expect(effectCalls("nl-no")).toBe(0)
  })
})
