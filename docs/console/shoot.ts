/**
 * The README's screenshots of the console: `npm run docs:console` (needs `/usr/bin/chromium`). The runtime runs in this
 * process on loopback with the tests' probe tools; the page may reach nothing else.
 */
import { launchChromium } from "../../packages/cluster/test/browser.js"
import { makeProbes, startEdge } from "../../packages/cluster/test/fixtures.js"

const out = new URL(".", import.meta.url).pathname
const email = "From: Ada <ada@example.com>\r\nTo: bob@example.com\r\nSubject: Launch review\r\n" +
  "Date: Tue, 05 Mar 2024 14:30:00 +0000\r\n\r\nSee you there."

const edge = await startEdge(makeProbes())
const browser = await launchChromium()
try {
  const token = await edge.sign({ tenant_id: "demo", sub: "admin", role: "admin" })
  const submit = (body: unknown) => edge.call("POST", "/v1/tasks", token, body).then((r) => r.body.task_id as string)
  const session = "s-launch"
  await submit({ session_id: session, input: { steps: [{ id: "ping", tool: "probe.echo", input: { value: "hi" } }] } })
  await submit({ input: { steps: [{ id: "notify", tool: "probe.fail", input: {} }] } })
  await submit({
    mode: "async",
    input: { steps: [{ id: "sync_crm", tool: "probe.effect", input: { label: "crm", ms: 60_000 } }] }
  })
  const shown = await submit({
    session_id: session,
    input: {
      steps: [
        { id: "parse", tool: "email.parse", input: { raw: email } },
        { id: "wait", tool: "probe.effect", input: { label: "calendar", ms: 400 }, depends_on: ["parse"] },
        {
          id: "note",
          tool: "text.template",
          input: {
            template: "{{subject}} on {{date}}",
            variables: { subject: { $ref: "parse.output.subject" }, date: { $ref: "parse.output.date" } }
          }
        },
        { id: "summary", tool: "probe.echo", input: { value: { $ref: "note.output.text" } }, depends_on: ["wait"] }
      ]
    }
  })

  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 })
  await context.route("**", (route) => {
    const url = new URL(route.request().url())
    return url.protocol === "data:" || url.hostname === "127.0.0.1" ? route.continue() : route.abort()
  })
  const page = await context.newPage()
  await page.goto(`${edge.base}/console#token=${token}`)
  await page.locator(`#task-list li[data-task-id="${shown}"]`).click()
  await page.locator(`#task[data-status="succeeded"]`).waitFor()
  await page.locator("#conversation .msg").first().waitFor()
  // one step's output open, as a user would look at it (opened once the stream has ended: it stays open)
  await page.locator(".events", { hasText: "task.succeeded" }).waitFor()
  await page.locator(`tr[data-step-id="note"] summary`, { hasText: "output" }).click()
  await page.screenshot({ path: `${out}tasks.png` })
  await page.locator("#task-pane").screenshot({ path: `${out}steps.png` })
  await page.click("#tabs button[data-view=tools]")
  await page.locator(`#tools tr[data-tool-id="email.parse"]`).waitFor()
  await page.locator(`#tools tr[data-tool-id="email.parse"] summary`).first().click()
  await page.screenshot({ path: `${out}tools.png` })
  console.log(`screenshots in ${out}`)
} finally {
  await browser.close()
  await edge.close()
}
