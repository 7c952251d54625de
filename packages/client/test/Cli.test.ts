import { taskEvents } from "@altan/client"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as path from "node:path"
import { bundleCli, freePort, root, spawnCommand, startAltan } from "./runtime.js"

/**
 * The `altan` CLI and the README's typed-client example, run as a user runs them — child processes — against the
 * embedded runtime of `npm start` with the demo model (`DEMO_LLM=1`) on a free loopback port. Most commands run the
 * CLI's sources bundled into a temporary file (`bundleCli`: a tsx start per command would double the file's time);
 * some run the commands the repository documents: the package's bin, `packages/client/bin/altan.js` (what `npx altan`
 * runs; in the checkout, the sources through tsx), `npm run altan`'s command, and the README's `node
 * --conditions=@altan/source --import tsx example.ts`. Nothing is built into the checkout: the compiled package is the
 * pack check's (`npm run client:pack-check`).
 */
const rootPackage = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
const commands = {
  /** `npm run altan -- <args>` */
  source: rootPackage.scripts.altan.split(/\s+/) as Array<string>,
  /** `npx altan <args>` */
  launcher: ["node", "packages/client/bin/altan.js"],
  bundle: [] as Array<string>
}

let altan: Awaited<ReturnType<typeof startAltan>>
let bundle: Awaited<ReturnType<typeof bundleCli>> | undefined
let work = ""

beforeAll(async () => {
  ;[altan, bundle] = await Promise.all([startAltan(), bundleCli()])
  commands.bundle = ["node", bundle.file]
  // inside the repository, so the example's imports resolve to the workspace's packages
  work = fs.mkdtempSync(path.join(root, ".readme-example-"))
}, 120_000)

afterAll(async () => {
  if (work !== "") fs.rmSync(work, { recursive: true, force: true })
  bundle?.remove()
  await altan?.stop()
}, 30_000)

/** `altan <args>` against the test's runtime, by default from the bundle. */
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}, via: keyof typeof commands = "bundle") =>
  spawnCommand([...commands[via], ...args], { ALTAN_URL: altan.url, ALTAN_TOKEN: altan.token, ...env })

const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}, via: keyof typeof commands = "bundle") =>
  cli(args, env, via).done

const file = (name: string, content: unknown) => {
  const target = path.join(work, name)
  fs.writeFileSync(target, typeof content === "string" ? content : JSON.stringify(content))
  return target
}

const api = async (method: string, route: string, body?: unknown) => {
  const res = await fetch(`${altan.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${altan.token}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {})
  })
  const text = await res.text()
  return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
}

const plan = {
  steps: [
    { id: "greet", tool: "text.template", input: { template: "Hi {{name}}", variables: { name: "Ada" } } },
    { id: "pick", tool: "json.extract", input: { json: { said: { $ref: "greet.output.text" } }, path: "said" } }
  ]
}

/** The lines of `text` matching `pattern`, in order. */
const linesOf = (text: string, pattern: RegExp) => text.split("\n").filter((line) => pattern.test(line))

describe("README's typed-client example", () => {
  const section = (() => {
    const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
    const start = readme.indexOf("### Typed clients")
    return readme.slice(start, readme.indexOf("\n### ", start + 1))
  })()

  it("runs as printed, with the printed command, against the runtime", async () => {
    const code = /```ts\n([\s\S]*?)```/.exec(section)![1]!
    const command = /```sh\n(node [^\n]*example\.ts)\n```/.exec(section)![1]!
    expect(code).toContain(`from "@altan/client"`)
    fs.writeFileSync(path.join(work, "example.ts"), code)
    const result = await spawnCommand(command.split(/\s+/), { TOKEN: altan.token, ALTAN_URL: altan.url }, work).done
    expect(result.code, result.stdout + result.stderr).toBe(0)
    const output = result.stdout + result.stderr
    // what the README says it logs
    const said = /logs the RPC task's events \(`task\.queued` \.\.\. `task\.succeeded`\), then\s+`([^`]+)`/.exec(
      section
    )
    expect(said).not.toBeNull()
    expect(output).toContain(said![1]!)
    expect(linesOf(output, /INFO .*: (task|tool)\./).map((l) => l.split(": ").at(-1))).toEqual([
      "task.queued",
      "task.started",
      "tool.started",
      "tool.completed",
      "task.succeeded"
    ])
  }, 60_000)
})

describe("taskEvents", () => {
  it("streams a task's events over SSE up to the terminal one; resumes after an event id", async () => {
    const options = { baseUrl: altan.url, token: altan.token }
    const collect = (after?: string) =>
      Effect.runPromise(
        taskEvents({ ...options, after }, taskId).pipe(Stream.runCollect, Effect.provide(FetchHttpClient.layer))
      ).then((chunk) => Chunk.toReadonlyArray(chunk))
    const accepted = await api("POST", "/v1/tasks", { input: plan, mode: "async" })
    const taskId: string = accepted.body.task_id
    const events = await collect()
    expect(events.map((e) => `${e.type} ${e.step_id ?? ""}`.trim())).toEqual([
      "task.queued",
      "task.started",
      "tool.started greet",
      "tool.completed greet",
      "tool.started pick",
      "tool.completed pick",
      "task.succeeded"
    ])
    expect((await collect(events[2]!.id)).map((e) => e.id)).toEqual(events.slice(3).map((e) => e.id))
    const notFound = await Effect.runPromise(
      taskEvents(options, "s.t").pipe(Stream.runCollect, Effect.flip, Effect.provide(FetchHttpClient.layer))
    )
    expect(notFound).toMatchObject({ _tag: "NotFound", code: "not_found" })
  })
})

describe("altan tasks run", () => {
  it("runs a plan file: a progress line per step change, the task's summary, exit 0", async () => {
    // as `npm run altan -- tasks run plan.json` runs it, from the sources
    const result = await run(["tasks", "run", file("plan.json", plan)], {}, "source")
    expect(result.code, result.stderr).toBe(0)
    const taskId = /^task (\S+) submitted/m.exec(result.stderr)![1]!
    expect(linesOf(result.stderr, /^\[/)).toEqual([
      "[greet] text.template running",
      expect.stringMatching(/^\[greet\] text\.template succeeded in \d+ ms$/),
      "[pick] json.extract running",
      expect.stringMatching(/^\[pick\] json\.extract succeeded in \d+ ms$/)
    ])
    expect(result.stderr).toContain(`task ${taskId} succeeded`)
    expect(result.stdout).toMatch(new RegExp(`^task ${taskId.replace(/\./g, "\\.")} succeeded \\(session .*, 2 steps`))
    expect(result.stdout).toContain(`output: {"value":"Hi Ada","found":true}`)
    // the task is the API's
    const task = await api("GET", `/v1/tasks/${taskId}`)
    expect(task.body).toMatchObject({ status: "succeeded", mode: "async", output: { value: "Hi Ada", found: true } })
  })

  it("prints the task as the API's JSON with --json, in the session given", async () => {
    const result = await run(["tasks", "run", file("request.json", { input: plan }), "--json", "--session", "cli"])
    expect(result.code, result.stderr).toBe(0)
    const task = JSON.parse(result.stdout)
    expect(task).toMatchObject({ session_id: "cli", status: "succeeded", steps: [{ id: "greet" }, { id: "pick" }] })
    expect(task).toEqual((await api("GET", `/v1/tasks/${task.task_id}`)).body)
  })

  it("exits 1 on a failed task, showing the step's error", async () => {
    const failing = { input: { steps: [{ id: "pick", tool: "json.extract", input: { json: { a: 1 }, path: "b" } }] } }
    const result = await run(["tasks", "run", file("failing.json", failing)])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/^\[pick\] json\.extract failed: tool_failed: path b not found/m)
    expect(result.stdout).toMatch(/ failed \(session /)
    expect(result.stdout).toMatch(/^error: step_failed: step "pick" \(json\.extract\) failed/m)
  })

  it("runs a natural-language task through the demo model", async () => {
    const result = await run(["tasks", "run", "Use a template to say hello to Ada"])
    expect(result.code, result.stderr).toBe(0)
    expect(linesOf(result.stderr, /^\[/)).toEqual([
      "[llm] demo calls text.template",
      "[1.1] text.template running",
      expect.stringMatching(/^\[1\.1\] text\.template succeeded in \d+ ms$/),
      "[llm] demo answers"
    ])
    expect(result.stdout).toContain(`output: [demo model] I called text.template; it returned {"text":"Hello, Ada!"}`)
  })

  it("refuses a request the API would refuse before sending it, naming the fields; the API's own refusals too", async () => {
    const local = await run(["tasks", "run", file("typo.json", { inputs: plan })])
    expect(local.code).toBe(2)
    expect(local.stderr).toContain("is not a task request:")
    expect(local.stderr).toContain("inputs: is not a field of this request")
    expect(local.stderr).toContain("input: is required")
    expect(local.stderr).not.toContain("submitted")
    const remote = await run(["tasks", "run", file("unknown.json", { steps: [{ id: "x", tool: "no.such_tool" }] })])
    expect(remote.code).toBe(1)
    expect(remote.stderr).toContain("error: unknown_tool: step \"x\" uses unknown tool no.such_tool")
    expect(remote.stderr).toContain("(field input.steps.0.tool)")
    const folder = path.join(work, "plans.json")
    fs.mkdirSync(folder)
    const [missing, directory] = await Promise.all([
      run(["tasks", "run", path.join(work, "absent.json")]),
      run(["tasks", "run", folder])
    ])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain("cannot read")
    expect(directory.code).toBe(2)
    expect(directory.stderr).toContain(`${folder} is not a file: tasks run reads a .json file or takes text`)
  })
})

describe("a waiting task", () => {
  const waiting = {
    input: { steps: [{ id: "greet", tool: "text.template", input: { template: "Hi", variables: {} } }] },
    approval_required: ["text.template"]
  }

  it("says what it waits for and is followed on; tasks list, get, cancel; the follower ends with exit 1", async () => {
    const follower = cli(["tasks", "run", file("waiting.json", waiting)])
    const taskId = (await follower.waitForStderr(/^task (\S+) submitted/m))[1]!
    const approval = await follower.waitForStderr(/^\[greet\] text\.template waits for approval until .*$/m)
    expect(approval[0]).toContain(`/v1/tasks/${taskId}/steps/greet/approve with {"input_hash": "`)
    await follower.waitForStderr(/waiting for approval of greet \(Ctrl-C stops watching; the task goes on\)/)
    expect(follower.child.exitCode).toBeNull()

    const [listed, inSession, got] = await Promise.all([
      run(["tasks", "list", "--status", "waiting"]),
      run(["tasks", "list", "--session", taskId.split(".")[0]!, "--json"]),
      run(["tasks", "get", taskId])
    ])
    expect(listed.code).toBe(0)
    expect(listed.stdout).toMatch(new RegExp(`^${taskId.replace(/\./g, "\\.")}\\s+waiting\\s+plan\\s+1 step `, "m"))
    expect(JSON.parse(inSession.stdout).tasks.map((t: { task_id: string }) => t.task_id)).toEqual([taskId])
    // the API's JSON, as the API sends it
    expect(JSON.parse(inSession.stdout)).toEqual(
      (await api("GET", `/v1/tasks?session_id=${taskId.split(".")[0]!}`)).body
    )
    expect(got.stdout).toMatch(/^waiting for approval of step greet \(text\.template\): input_hash [0-9a-f]{64}$/m)

    const cancelled = await run(["tasks", "cancel", taskId])
    expect(cancelled.code, cancelled.stderr).toBe(0)
    expect(cancelled.stdout).toContain(`task ${taskId} cancelled`)
    const followed = await follower.done
    expect(followed.code).toBe(1)
    expect(followed.stderr).toContain(`task ${taskId} cancelled`)

    const [again, watched] = await Promise.all([
      run(["tasks", "cancel", taskId]),
      run(["tasks", "watch", taskId, "--json"])
    ])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain(`error: task_finished: task ${taskId} already cancelled`)
    expect(watched.code).toBe(1)
    expect(JSON.parse(watched.stdout)).toMatchObject({ task_id: taskId, status: "cancelled" })
    expect(watched.stderr).toContain("[greet] text.template waits for approval")
  })

  it("Ctrl-C stops following, not the task (through npx altan's launcher, which forwards it)", async () => {
    const follower = cli(["tasks", "run", file("waiting.json", waiting)], {}, "launcher")
    const taskId = (await follower.waitForStderr(/^task (\S+) submitted/m))[1]!
    await follower.waitForStderr(/waiting for approval of greet/)
    follower.child.kill("SIGINT")
    const result = await follower.done
    expect(result.code).toBe(130)
    expect(result.stderr).toContain(`stopped watching; task ${taskId} goes on (altan tasks watch ${taskId}`)
    expect((await api("GET", `/v1/tasks/${taskId}`)).body.status).toBe("waiting")
    await api("POST", `/v1/tasks/${taskId}/cancel`)
  })
})

describe("altan tools, llms, connections", () => {
  it("lists the tools; puts a custom tool, which is listed then", async () => {
    const definition = {
      name: "Send Slack Notification",
      description: "Sends a message to a Slack channel",
      parameters: [{ name: "channel_id", type: "string" }, { name: "message", type: "string" }],
      endpoint: "https://slack.example/api/chat.postMessage",
      method: "POST",
      auth: "oauth2"
    }
    const put = await run(["tools", "put", "slack_notify", file("tool.json", definition)])
    expect(put.code, put.stderr).toBe(0)
    expect(put.stdout).toBe("tool slack_notify saved\n")
    const [listed, asJson] = await Promise.all([run(["tools", "list"]), run(["tools", "list", "--json"])])
    expect(listed.code).toBe(0)
    expect(listed.stdout).toMatch(/^text\.template\s+built-in\s+Fills/m)
    expect(listed.stdout).toMatch(/^slack_notify\s+custom\s+Sends a message to a Slack channel$/m)
    const json = JSON.parse(asJson.stdout)
    expect(json.find((t: { tool_id: string }) => t.tool_id === "slack_notify")).toMatchObject({ builtin: false })
    expect(json).toEqual((await api("GET", "/v1/tools")).body)
  })

  it("puts an LLM, read back from the API; a mismatched id is the API's refusal", async () => {
    const config = { endpoint: "http://127.0.0.1:11434/v1/chat/completions", model: "llama3.2", auth: { type: "none" } }
    const put = await run(["llms", "put", "ollama", file("llm.json", config)])
    expect(put.code, put.stderr).toBe(0)
    expect(put.stdout).toBe("llm ollama saved\n")
    expect((await api("GET", "/v1/llms/ollama")).body).toEqual({ llm_id: "ollama", ...config })
    const other = await run(["llms", "put", "other", file("llm2.json", { llm_id: "ollama", ...config })])
    expect(other.code).toBe(1)
    expect(other.stderr).toContain(`the body's llm_id "ollama" differs from the path's "other"`)
  })

  it("lists connections and prints an OAuth2 authorize URL; a provider without one is the API's not_found", async () => {
    const missing = await run(["connections", "authorize", "hubspot"])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("error: not_found: no connection for hubspot")
    expect((await api("PUT", "/v1/secrets/slack_client_secret", { value: "s3cret" })).status).toBe(204)
    const put = await api("PUT", "/v1/connections/slack", {
      type: "oauth2",
      client_id: "app-1",
      client_secret_secret: "slack_client_secret",
      authorize_url: "https://slack.example/oauth/authorize",
      token_url: "https://slack.example/oauth/token"
    })
    expect(put.status).toBe(200)
    const [listed, listedJson] = await Promise.all([
      run(["connections", "list"]),
      run(["connections", "list", "--json"])
    ])
    expect(listed.stdout).toMatch(/^slack\s+oauth2\s+pending$/m)
    expect(JSON.parse(listedJson.stdout)).toEqual((await api("GET", "/v1/connections")).body)
    const started = await run(["connections", "authorize", "slack"])
    expect(started.code, started.stderr).toBe(0)
    const url = new URL(started.stdout.split("\n")[1]!)
    expect(url.origin + url.pathname).toBe("https://slack.example/oauth/authorize")
    expect(url.searchParams.get("client_id")).toBe("app-1")
    expect(url.searchParams.get("code_challenge_method")).toBe("S256")
  })
})

describe("altan's errors", () => {
  it("a bad token: the API's invalid_token, exit 1", async () => {
    const result = await run(["tasks", "list"], { ALTAN_TOKEN: "not.a.jwt" })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/^error: invalid_token: .*\(check ALTAN_TOKEN\)$/m)
  })

  it("no token: says how to get one, exit 2", async () => {
    const result = await run(["tools", "list"], { ALTAN_TOKEN: "" })
    expect(result.code).toBe(2)
    expect(result.stderr).toContain("ALTAN_TOKEN is not set")
  })

  it("a server that is not there: names the URL, exit 1", async () => {
    const url = `http://127.0.0.1:${await freePort()}`
    const result = await run(["tasks", "get", "s.t"], { ALTAN_URL: url })
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`cannot reach Altan at ${url}`)
    expect(result.stderr).toContain("ECONNREFUSED")
  })

  it("a task that is not the tenant's or not a task id; an unknown command; --help", async () => {
    const [notFound, malformed, unknown, help] = await Promise.all([
      run(["tasks", "get", "s.t"]),
      run(["tasks", "get", "no-dot"]),
      run(["tasks", "explode"]),
      run(["--help"], { ALTAN_TOKEN: "" })
    ])
    expect(notFound.code).toBe(1)
    expect(notFound.stderr).toBe("error: not_found: task s.t not found\n")
    expect(malformed.code).toBe(2)
    expect(malformed.stderr).toContain("not a task id")
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("unknown command: altan tasks explode")
    expect(help.code).toBe(0)
    for (const command of ["tasks run", "tasks list", "tools put", "llms put", "connections authorize"]) {
      expect(help.stdout).toContain(`  ${command} `)
    }
  })
})
