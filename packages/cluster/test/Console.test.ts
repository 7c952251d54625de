import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import type { Browser, Page } from "playwright-core"
import { browserTests, launchChromium } from "./browser.js"
import { makeProbes, startEdge } from "./fixtures.js"

// The console in a real headless Chromium (Debian's, installed by .ci/run), against the edge over the whole runtime.

let edge: Awaited<ReturnType<typeof startEdge>>
let browser: Browser
let page: Page
let token = ""
/** Requests the page made to anything but the edge on loopback (refused), and what its console said in error. */
const offHost: Array<string> = []
const errors: Array<string> = []
/** Every API request the page made: its URL (never carrying the token) and the token it was sent with. */
const requests: Array<{ readonly url: string; readonly authorization: string | undefined }> = []

beforeAll(async () => {
  if (!browserTests) return
  edge = await startEdge(makeProbes())
  token = await edge.sign({ tenant_id: "console", role: "admin" })
  browser = await launchChromium()
  const context = await browser.newContext()
  await context.route("**", (route) => {
    const url = new URL(route.request().url())
    if (url.protocol === "data:") return route.continue()
    if (url.hostname !== "127.0.0.1") {
      offHost.push(url.href)
      return route.abort()
    }
    if (url.pathname.startsWith("/v1/")) {
      requests.push({ url: url.href, authorization: route.request().headers()["authorization"] })
    }
    return route.continue()
  })
  page = await context.newPage()
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text())
  })
  page.on("pageerror", (error) => errors.push(error.message))
})

afterAll(async () => {
  await browser?.close()
  await edge?.close()
})

const submit = async (body: unknown) => {
  const res = await edge.call("POST", "/v1/tasks", token, body)
  expect([200, 202]).toContain(res.status)
  return res.body.task_id as string
}

describe.skipIf(!browserTests)("the console", () => {
  it("is served with a strict policy, takes a token and follows a task's steps live", async () => {
    const res = await page.goto(`${edge.base}/console`)
    expect(res?.status()).toBe(200)
    const headers = res!.headers()
    expect(headers["content-security-policy"]).toContain("script-src 'self'")
    expect(headers["content-security-policy"]).toContain("frame-ancestors 'none'")
    expect(headers["x-content-type-options"]).toBe("nosniff")
    expect(headers["referrer-policy"]).toBe("no-referrer")
    expect(headers["x-frame-options"]).toBe("DENY")

    await page.fill("#token", token)
    await page.click("#token-form button[type=submit]")
    await expect.poll(() => page.evaluate("sessionStorage.length")).toBe(1)

    // a two-step plan whose first step takes a while; its output is markup, which must stay text
    const taskId = await submit({
      mode: "async",
      input: {
        steps: [
          { id: "slow", tool: "probe.effect", input: { label: "<img src=x id=injected>", ms: 4000 } },
          { id: "echo", tool: "probe.echo", input: { value: { $ref: "slow.output.label" } } }
        ]
      }
    })
    const item = page.locator(`#task-list li[data-task-id="${taskId}"]`)
    await item.waitFor({ timeout: 5_000 })
    await item.click()
    await page.locator(`#task[data-task-id="${taskId}"]`).waitFor({ timeout: 5_000 })
    // opened while it runs: the page shows it unfinished, then the stream brings both steps to `succeeded`
    expect(await page.locator("#task").getAttribute("data-status")).not.toBe("succeeded")
    await page.locator(`#task[data-status="succeeded"]`).waitFor({ timeout: 10_000 })
    for (const step of ["slow", "echo"]) {
      expect(await page.locator(`.node[data-step-id="${step}"]`).getAttribute("data-status")).toBe("succeeded")
    }
    await expect.poll(() => page.locator(".events").textContent()).toContain("task.succeeded")
    expect(await page.locator(".node[data-step-id=echo] .after").textContent()).toBe("after slow")
    expect(await page.locator("#injected").count()).toBe(0)
    expect(await page.locator("pre", { hasText: "<img src=x id=injected>" }).count()).toBeGreaterThan(0)
    await expect.poll(() => page.locator("#conversation .msg").count()).toBe(2)
    // the list, polled, catches up too
    await expect.poll(() => item.getAttribute("data-status"), { timeout: 5_000 }).toBe("succeeded")
  })

  it("shows a failed step's error", async () => {
    const taskId = await submit({ input: { steps: [{ id: "boom", tool: "probe.fail", input: {} }] } })
    const item = page.locator(`#task-list li[data-task-id="${taskId}"]`)
    await item.waitFor({ timeout: 5_000 })
    await item.click()
    await page.locator(`#task[data-task-id="${taskId}"][data-status="failed"]`).waitFor({ timeout: 5_000 })
    expect(await page.locator(".node[data-step-id=boom]").getAttribute("data-status")).toBe("failed")
    expect(await page.locator(".node[data-step-id=boom] .step-error").textContent()).toContain("upstream said no")
  })

  it("lists the tools with their schemas and the connections", async () => {
    await page.click("#tabs button[data-view=tools]")
    const echo = page.locator(`#tools tr[data-tool-id="probe.echo"]`)
    await echo.waitFor({ timeout: 5_000 })
    expect(await echo.locator("pre").first().textContent()).toContain("\"value\"")
    await page.click("#tabs button[data-view=connections]")
    await expect.poll(() => page.locator("#connections-status").textContent()).toContain("connections")
  })

  it("connects an OAuth2 provider: Connect opens the authorization URL the API made", async () => {
    const put = await edge.call("PUT", "/v1/connections/acme", token, {
      type: "oauth2",
      client_id: "console-app",
      authorize_url: "https://auth.acme.test/authorize",
      token_url: "https://auth.acme.test/token",
      scopes: ["read"]
    })
    expect(put.status).toBe(200)
    // the consent page is the provider's, off loopback: what the console would open is recorded instead
    await page.evaluate("window.open = (url) => { window.opened = url; return null }")
    await page.click("#tabs button[data-view=tasks]")
    await page.click("#tabs button[data-view=connections]")
    const row = page.locator(`#connections tr[data-provider="acme"]`)
    await row.waitFor({ timeout: 5_000 })
    expect(await row.locator(".badge").textContent()).toBe("pending")
    await row.locator("button", { hasText: "Connect" }).click()
    await expect.poll(() => page.evaluate("window.opened ?? ''")).toMatch(
      /^https:\/\/auth\.acme\.test\/authorize\?.*state=.*code_challenge=/
    )
  })

  it("forgets a token: nothing of its tenant stays on screen, and nothing more is asked with it", async () => {
    await page.click("#tabs button[data-view=tasks]")
    await page.locator("#task-list li[data-task-id]").first().click()
    await page.locator("#task[data-task-id]").waitFor({ timeout: 5_000 })
    await page.click("#forget")
    await expect.poll(() => page.evaluate("sessionStorage.length")).toBe(0)
    expect(await page.locator("#task-list li[data-task-id]").count()).toBe(0)
    expect(await page.locator("#task").count()).toBe(0)
    const before = requests.length
    await new Promise((r) => setTimeout(r, 3_000))
    expect(requests.slice(before)).toEqual([])
  })

  it("sent nothing off loopback, no token in any URL, and logged no errors (CSP violations included)", () => {
    expect(offHost).toEqual([])
    expect(requests.length).toBeGreaterThan(0)
    expect(requests.filter((r) => r.url.includes(token))).toEqual([])
    expect(requests.filter((r) => r.authorization !== `Bearer ${token}`)).toEqual([])
    expect(errors).toEqual([])
  })
})
