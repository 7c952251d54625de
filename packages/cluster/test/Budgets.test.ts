import { AgentSession, ResumeAt } from "@altan/domain/AgentSession"
import { entityId, type TenantId } from "@altan/domain/Ids"
import * as TenantConfig from "@altan/integrator/TenantConfig"
import * as EntityAddress from "@effect/cluster/EntityAddress"
import * as EntityId from "@effect/cluster/EntityId"
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as Sharding from "@effect/cluster/Sharding"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { startFakeOpenAi } from "./FakeOpenAi.js"
import { ended, makeProbes, sleep, startEdge } from "./fixtures.js"

// Spend budgets over the public API: a task that would go past one waits (`waiting_budget`) instead of failing
// half-done, goes on once an admin raises the limit, can be cancelled meanwhile, and `GET /v1/usage` shows the
// period's use. The fake LLM answers every turn with 11 prompt and 7 completion tokens.

const probes = makeProbes()
let edge: Awaited<ReturnType<typeof startEdge>>
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
let admin = ""
let member = ""
let llmAdmin = ""
let llmMember = ""

/** The UTC midnight after the test's start, as a budget of the day resets (a run across midnight is skipped below). */
const startedAt = new Date()
const nextDay = () =>
  new Date(Date.UTC(startedAt.getUTCFullYear(), startedAt.getUTCMonth(), startedAt.getUTCDate() + 1)).toISOString()
const acrossMidnight = () => new Date().toISOString().slice(0, 10) !== startedAt.toISOString().slice(0, 10)

const usageOf = async (token: string, budget: string, period: string) =>
  (await edge.call("GET", "/v1/usage", token)).body.usage.find((u: any) => u.budget === budget && u.period === period)

const echoCalls = (value: string) =>
  probes.calls.filter((c) => c.tool === "probe.echo" && (c.input as { value: unknown }).value === value).length

beforeAll(async () => {
  fake = await startFakeOpenAi()
  edge = await startEdge(probes)
  admin = await edge.sign({ tenant_id: "bud", role: "admin", sub: "root" })
  member = await edge.sign({ tenant_id: "bud", role: "member", sub: "ana" })
  llmAdmin = await edge.sign({ tenant_id: "bud-llm", role: "admin", sub: "root" })
  llmMember = await edge.sign({ tenant_id: "bud-llm", role: "member", sub: "bo" })
  expect((await edge.call("PUT", "/v1/secrets/llm_key", llmAdmin, { value: "sk-budgets" })).status).toBe(204)
  const llm = await edge.call("PUT", "/v1/llms/main", llmAdmin, {
    llm_id: "main",
    endpoint: fake.url,
    auth: { type: "api_key", key: "llm_key" },
    // our own prices: the cost budget's, never sent to the model
    parameters: { temperature: 0, price_per_1k_input: 1.5, price_per_1k_output: 2 }
  })
  expect(llm.status, llm.text).toBe(200)
})

afterAll(async () => {
  await edge.close()
  await fake.close()
})

describe.skipIf(acrossMidnight())("spend budgets", () => {
  it("a plan that would go past its tool_calls budget waits mid-task, and goes on once an admin raises it", async () => {
    const settings = await edge.call("PUT", "/v1/settings", admin, {
      budgets: { tool_calls: { limit: 2, period: "day" } }
    })
    expect(settings.status, settings.text).toBe(200)
    const submitted = await edge.call("POST", "/v1/tasks", member, {
      input: {
        steps: [
          { id: "a", tool: "probe.echo", input: { value: "bud-a" } },
          { id: "b", tool: "probe.echo", input: { value: "bud-b" }, depends_on: ["a"] },
          { id: "c", tool: "probe.echo", input: { value: "bud-c" }, depends_on: ["b"] }
        ]
      }
    })
    // two calls fit; the third waits, the task neither fails nor runs it
    expect(submitted.status, submitted.text).toBe(202)
    const task = submitted.body
    expect(task.status).toBe("waiting")
    expect(task.steps.map((s: any) => s.status)).toEqual(["succeeded", "succeeded", "waiting_budget"])
    expect(task.waiting_for).toEqual([{
      step_id: "c",
      kind: "budget",
      tool: "probe.echo",
      budget: "tool_calls",
      resets_at: nextDay()
    }])
    expect(task.steps[2].budget).toMatchObject({ budget: "tool_calls", period: "day", limit: 2, used: 2 })
    expect([echoCalls("bud-a"), echoCalls("bud-b"), echoCalls("bud-c")]).toEqual([1, 1, 0])
    // any member of the tenant sees the day's use against its limit
    expect(await usageOf(member, "tool_calls", "day")).toEqual({
      budget: "tool_calls",
      period: "day",
      used: 2,
      limit: 2,
      resets_at: nextDay()
    })
    expect(await usageOf(member, "tool_calls", "month")).toMatchObject({ used: 2 })
    expect((await usageOf(member, "tool_calls", "month")).limit).toBeUndefined()

    // raised: the task goes on by itself, and the waiting call runs once
    expect(
      (await edge.call("PUT", "/v1/settings", admin, { budgets: { tool_calls: { limit: 10, period: "day" } } }))
        .status
    ).toBe(200)
    const done = await edge.until(task.task_id, member, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(done.steps[2]).toMatchObject({ status: "succeeded", budget: { budget: "tool_calls" } })
    expect(echoCalls("bud-c")).toBe(1)
    expect((await usageOf(member, "tool_calls", "day")).used).toBe(3)
    const events = await edge.events(task.task_id, member)
    expect(events.find((e) => e.type === "budget.exhausted")).toMatchObject({
      step_id: "c",
      data: { step_id: "c", tool: "probe.echo", budget: "tool_calls", limit: 2, used: 2, resets_at: nextDay() }
    })
    expect(events.at(-1).type).toBe("task.succeeded")
  })

  it("a notice that finds the budget still spent leaves the wait to the next one: raised later, it goes on", async () => {
    const tenantAdmin = await edge.sign({ tenant_id: "bud-again", role: "admin", sub: "root" })
    const spent = { budgets: { tool_calls: { limit: 0, period: "day" } } }
    expect((await edge.call("PUT", "/v1/settings", tenantAdmin, spent)).status).toBe(200)
    const task = (await edge.call("POST", "/v1/tasks", tenantAdmin, {
      input: { steps: [{ id: "g", tool: "probe.echo", input: { value: "bud-g" } }] },
      mode: "async"
    })).body
    await edge.until(task.task_id, tenantAdmin, (t) => t.status === "waiting")
    // settings written again, the budget still spent: the task looks, and waits on
    expect((await edge.call("PUT", "/v1/settings", tenantAdmin, { ...spent, approval_timeout: 600 })).status).toBe(200)
    await sleep(500)
    expect((await edge.call("GET", `/v1/tasks/${task.task_id}`, tenantAdmin)).body.status).toBe("waiting")
    expect(echoCalls("bud-g")).toBe(0)
    // the next notice wakes the same wait again
    expect(
      (await edge.call("PUT", "/v1/settings", tenantAdmin, { budgets: { tool_calls: { limit: 5, period: "day" } } }))
        .status
    ).toBe(200)
    const done = await edge.until(task.task_id, tenantAdmin, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(echoCalls("bud-g")).toBe(1)
    // one wait, one event: looking again and waiting on said nothing new
    const events = await edge.events(task.task_id, tenantAdmin)
    expect(events.filter((e) => e.type === "budget.exhausted")).toHaveLength(1)
  })

  it("a task waiting for a budget can be cancelled; raising the budget then runs nothing of it", async () => {
    const spent = await edge.call("PUT", "/v1/settings", admin, {
      budgets: { tool_calls: { limit: 3, period: "day" } }
    })
    expect(spent.status).toBe(200)
    const task = (await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "x", tool: "probe.echo", input: { value: "bud-x" } }] },
      mode: "async"
    })).body
    await edge.until(task.task_id, member, (t) => t.status === "waiting")
    const cancelled = await edge.call("POST", `/v1/tasks/${task.task_id}/cancel`, member)
    expect(cancelled.status, cancelled.text).toBe(200)
    expect(cancelled.body.steps[0].status).toBe("cancelled")
    expect((await edge.call("PUT", "/v1/settings", admin, {})).status).toBe(200)
    await sleep(500)
    expect((await edge.call("GET", `/v1/tasks/${task.task_id}`, member)).body.status).toBe("cancelled")
    expect(echoCalls("bud-x")).toBe(0)
  })

  it("an NL task whose token budget is spent waits before the model's next turn; raised, it goes on", async () => {
    const settings = await edge.call("PUT", "/v1/settings", llmAdmin, {
      default_llm: "main",
      budgets: { llm_tokens: { limit: 10, period: "month" }, cost_usd: { limit: 5, period: "month" } }
    })
    expect(settings.status, settings.text).toBe(200)
    fake.script(
      { kind: "tools", calls: [{ name: "probe-echo", arguments: `{"value": "bud-nl"}` }] },
      { kind: "answer", content: "echoed" }
    )
    const before = fake.received.length
    const submitted = await edge.call("POST", "/v1/tasks", llmMember, { input: "echo it", tools: ["probe.echo"] })
    expect(submitted.status, submitted.text).toBe(202)
    const task = submitted.body
    // the first turn fit (0 < 10) and spent 18 tokens; its call ran; the second turn is not asked
    expect(task.status).toBe("waiting")
    expect(task.steps.map((s: any) => s.status)).toEqual(["succeeded"])
    expect(task.waiting_for).toEqual([expect.objectContaining({
      step_id: "llm.2",
      kind: "budget",
      tool: "llm:main",
      budget: "llm_tokens"
    })])
    expect(task.budget_wait).toMatchObject({ turn: 2, llm_id: "main", budget: "llm_tokens", limit: 10, used: 18 })
    expect(fake.received.length - before).toBe(1)
    // our prices were not sent to the model; its own parameters were
    expect(fake.received.at(-1)!.body.temperature).toBe(0)
    expect(fake.received.at(-1)!.body.price_per_1k_input).toBeUndefined()
    expect(await usageOf(llmMember, "llm_tokens", "month")).toMatchObject({ used: 18, limit: 10 })
    // 11 prompt tokens at 1.5 USD and 7 completion tokens at 2 USD per 1,000
    expect((await usageOf(llmMember, "cost_usd", "month")).used).toBeCloseTo(0.0305, 10)

    const raised = await edge.call("PUT", "/v1/settings", llmAdmin, {
      default_llm: "main",
      budgets: { llm_tokens: { limit: 1000, period: "month" } }
    })
    expect(raised.status).toBe(200)
    const done = await edge.until(task.task_id, llmMember, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(done.output).toBe("echoed")
    expect(done.waiting_for).toBeUndefined()
    expect(fake.received.length - before).toBe(2)
    expect(echoCalls("bud-nl")).toBe(1)
    expect((await usageOf(llmMember, "llm_tokens", "month")).used).toBe(36)
    const events = await edge.events(task.task_id, llmMember)
    expect(events.filter((e) => e.type === "budget.exhausted")).toEqual([
      expect.objectContaining({ data: expect.objectContaining({ step_id: "llm.2", budget: "llm_tokens" }) })
    ])
  })

  it("at its budget's reset the wait ends by itself: the session's ResumeAt wakes it, a stale one does nothing", async () => {
    const resetAdmin = await edge.sign({ tenant_id: "bud-reset", role: "admin", sub: "root" })
    expect(
      (await edge.call("PUT", "/v1/settings", resetAdmin, { budgets: { tool_calls: { limit: 0, period: "day" } } }))
        .status
    ).toBe(200)
    const task = (await edge.call("POST", "/v1/tasks", resetAdmin, {
      input: { steps: [{ id: "r", tool: "probe.echo", input: { value: "bud-r" } }] }
    })).body
    expect(task.status, JSON.stringify(task)).toBe("waiting")
    const since = task.steps[0].budget.requested_at as string
    // the period is over as far as the budget is concerned (written behind the API's back: no notice wakes anyone)
    await edge.run(
      Effect.flatMap(
        TenantConfig.TenantConfig,
        (config) =>
          config.putSettings("bud-reset" as TenantId, { fallback_llms: [], egress_allowlist: [], providers: {} })
      )
    )
    const session = (resumeAt: ResumeAt) =>
      edge.run(
        Effect.flatMap(AgentSession.client, (client) =>
          client(entityId("bud-reset" as TenantId, task.session_id)).ResumeAt(resumeAt))
      )
    // a wake for another wait of the step (an older one) is not this one's
    await session(new ResumeAt({ task_id: task.task_id, step_id: "r", since: "2000-01-01T00:00:00.000Z", at: 0 }))
    await sleep(300)
    expect((await edge.call("GET", `/v1/tasks/${task.task_id}`, resetAdmin)).body.status).toBe("waiting")
    expect(echoCalls("bud-r")).toBe(0)
    // the session stored the wake of this wait, to be delivered at its resets_at
    const resetsAt = Date.parse(task.steps[0].budget.resets_at)
    const stored = await edge.run(Effect.gen(function*() {
      const sharding = yield* Sharding.Sharding
      const storage = yield* MessageStorage.MessageStorage
      const id = EntityId.make(entityId("bud-reset" as TenantId, task.session_id))
      return yield* storage.requestIdForPrimaryKey({
        address: EntityAddress.make({
          entityType: AgentSession.type,
          entityId: id,
          shardId: sharding.getShardId(id, "agent")
        }),
        tag: "ResumeAt",
        id: `${task.task_id}/r/${since}/${resetsAt}`
      })
    }))
    expect(Option.isSome(stored)).toBe(true)
    // that wake, as it is handled when its time comes (sent now: the test cannot wait for midnight)
    await session(new ResumeAt({ task_id: task.task_id, step_id: "r", since, at: Date.now() }))
    const done = await edge.until(task.task_id, resetAdmin, ended)
    expect(done.status, JSON.stringify(done)).toBe("succeeded")
    expect(echoCalls("bud-r")).toBe(1)
  })

  it("a budget is the tenant's own: another tenant's spend and settings change nothing", async () => {
    const other = await edge.sign({ tenant_id: "bud-other", role: "member", sub: "eve" })
    expect(await usageOf(other, "tool_calls", "day")).toMatchObject({ used: 0 })
    expect((await usageOf(other, "tool_calls", "day")).limit).toBeUndefined()
    const otherAdmin = await edge.sign({ tenant_id: "bud-other", role: "admin", sub: "eve" })
    expect(
      (await edge.call("PUT", "/v1/settings", otherAdmin, { budgets: { tool_calls: { limit: 0, period: "day" } } }))
        .status
    ).toBe(200)
    const mine = await edge.call("POST", "/v1/tasks", member, {
      input: { steps: [{ id: "y", tool: "probe.echo", input: { value: "bud-y" } }] }
    })
    expect(mine.body.status, mine.text).toBe("succeeded")
    // a limit that is not a number of the right kind is refused, naming the field
    const bad = await edge.call("PUT", "/v1/settings", admin, { budgets: { tool_calls: { limit: -1, period: "day" } } })
    expect(bad.status).toBe(400)
    const period = await edge.call("PUT", "/v1/settings", admin, {
      budgets: { tool_calls: { limit: 1, period: "week" } }
    })
    expect(period.status).toBe(400)
    expect(period.text).toContain("period")
  })
})
