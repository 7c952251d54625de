import type { TenantId } from "@altan/domain/Ids"
import type { LlmConfig } from "@altan/domain/LlmConfig"
import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as DemoLlm from "../src/DemoLlm.js"
import * as DevIssuer from "../src/DevIssuer.js"
import * as DemoModel from "../src/internal/demoModel.js"
import * as TenantConfig from "../src/TenantConfig.js"

/** `DemoLlm.layerConfig` over exactly `env`. */
const demoConfig = (env: Record<string, string>) =>
  Layer.build(DemoLlm.layerConfig).pipe(
    Effect.map(Context.get(DemoLlm.DemoLlmConfig)),
    Effect.scoped,
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
    Effect.exit
  )

const refusal = (exit: Exit.Exit<unknown, unknown>) => (Exit.isFailure(exit) ? JSON.stringify(exit.cause) : "")

describe("DEMO_LLM", () => {
  it.effect("is off unless set, and on with DEMO_LLM=1 in the embedded runtime's development shape", () =>
    Effect.gen(function*() {
      expect(yield* demoConfig({})).toEqual(Exit.succeed({ enabled: false }))
      expect(yield* demoConfig({ DEMO_LLM: "0" })).toEqual(Exit.succeed({ enabled: false }))
      expect(yield* demoConfig({ DEMO_LLM: "1" })).toEqual(Exit.succeed({ enabled: true }))
      expect(yield* demoConfig({ DEMO_LLM: "1", ROLE: "all", REDIS_URL: "redis://127.0.0.1:6379" })).toEqual(
        Exit.succeed({ enabled: true })
      )
      // off, a production setting is none of its business
      expect(yield* demoConfig({ ROLE: "agent", DATABASE_URL: "postgres://db/altan", NODE_ENV: "production" }))
        .toEqual(Exit.succeed({ enabled: false }))
    }))

  it.effect("refuses to start with any setting of a real deployment, naming it", () =>
    Effect.gen(function*() {
      for (
        const [env, named] of [
          [{ AUTH_JWKS_URL: "https://idp.example.com/.well-known/jwks.json" }, "AUTH_JWKS_URL"],
          [{ AUTH_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----..." }, "AUTH_PUBLIC_KEY"],
          [{ ROLE: "integrator" }, "ROLE=integrator"],
          [{ ROLE: "agent", DATABASE_URL: "postgres://db/altan" }, "ROLE=agent, DATABASE_URL"],
          [{ DATABASE_URL: "postgres://db/altan" }, "DATABASE_URL"],
          [{ NODE_ENV: "production" }, "NODE_ENV=production"]
        ] as const
      ) {
        const exit = yield* demoConfig({ DEMO_LLM: "1", ...env })
        expect(Exit.isFailure(exit), named).toBe(true)
        expect(refusal(exit), named).toContain(`is refused with ${named}:`)
        expect(refusal(exit)).toContain("DEMO_LLM")
      }
    }))
})

const acme = "acme" as TenantId
const dev = DevIssuer.devTenant as TenantId
const demoLlm: LlmConfig = {
  llm_id: "demo",
  endpoint: "http://127.0.0.1:4321/v1/chat/completions",
  auth: { type: "none" },
  model: "demo"
}

describe("the demo model offered to tenants", () => {
  const offered = Effect.map(
    Layer.build(TenantConfig.layerMemory).pipe(Effect.map(Context.get(TenantConfig.TenantConfig))),
    (config) => ({
      stored: config,
      seen: TenantConfig.withOperatorLlms(config, {
        llms: [demoLlm],
        defaultLlm: { llmId: "demo", tenants: [DevIssuer.devTenant] }
      })
    })
  )

  it.scoped("is every tenant's LLM `demo`, never stored; only the development tenant has it as its default", () =>
    Effect.gen(function*() {
      const { seen, stored } = yield* offered
      expect(yield* seen.getLlm(acme, "demo")).toEqual(Option.some(demoLlm))
      expect(yield* seen.listLlms(acme)).toEqual([demoLlm])
      expect(yield* stored.listLlms(acme)).toEqual([])
      // a tenant that did not ask for it does not get it
      expect((yield* seen.getSettings(acme)).default_llm).toBeUndefined()
      expect((yield* seen.getSettings(dev)).default_llm).toBe("demo")
      expect((yield* stored.getSettings(dev)).default_llm).toBeUndefined()
    }))

  it.scoped("gives way to the tenant's own LLM of the same id and to its own default", () =>
    Effect.gen(function*() {
      const { seen } = yield* offered
      const own: LlmConfig = { ...demoLlm, endpoint: "https://llm.example.com/v1/chat/completions", model: "mine" }
      yield* seen.putLlm(acme, own)
      expect(yield* seen.getLlm(acme, "demo")).toEqual(Option.some(own))
      expect(yield* seen.listLlms(acme)).toEqual([own])
      yield* seen.putLlm(dev, { ...own, llm_id: "gpt" })
      yield* seen.putSettings(dev, { default_llm: "gpt", fallback_llms: [], egress_allowlist: [], providers: {} })
      expect((yield* seen.getSettings(dev)).default_llm).toBe("gpt")
    }))
})

/** A request as the gateway sends it: the user's text, and the tools offered (function names). */
const request = (text: string, tools: ReadonlyArray<string>) => ({
  model: "demo",
  messages: [{ role: "system", content: "You are an agent." }, { role: "user", content: text }],
  tools: tools.map((name) => ({ type: "function", function: { name, description: "", parameters: {} } }))
})
const builtins = ["email-parse", "json-extract", "text-template", "datetime-parse"]

describe("the demo model's script", () => {
  it("calls the tool the first keyword names, with arguments taken from the message", () => {
    expect(DemoModel.move(request("Extract the age from {\"name\": \"Ada\", \"age\": 36}", builtins))).toEqual({
      _tag: "Call",
      name: "json-extract",
      arguments: { json: { name: "Ada", age: 36 }, path: "age" }
    })
    expect(DemoModel.move(request("Summarise this email: From: a@b.c\r\nSubject: Hi\r\n\r\nBody", builtins)))
      .toEqual({ _tag: "Call", name: "email-parse", arguments: { raw: "From: a@b.c\r\nSubject: Hi\r\n\r\nBody" } })
    expect(DemoModel.move(request("Fill the template \"Dear {{who}}, {{when}}\" with who=Bob when: 'soon'", builtins)))
      .toEqual({
        _tag: "Call",
        name: "text-template",
        arguments: { template: "Dear {{who}}, {{when}}", variables: { who: "Bob", when: "soon" } }
      })
    expect(DemoModel.move(request("What time is it?", builtins))).toEqual({
      _tag: "Call",
      name: "datetime-parse",
      arguments: { text: "now" }
    })
  })

  it("answers, marked, when no rule applies: no keyword, the tool not offered, or nothing to call it with", () => {
    for (
      const [text, tools] of [
        ["Tell me a joke", builtins],
        ["Say hello to Ada", ["json-extract"]],
        ["Extract the total", builtins]
      ] as const
    ) {
      const move = DemoModel.move(request(text, tools))
      expect(move._tag, text).toBe("Answer")
      expect(move._tag === "Answer" && move.content.startsWith("[demo model] "), text).toBe(true)
    }
  })

  it("answers with the tool's result after it, and every message it writes is marked", () => {
    const first = DemoModel.complete(request("Say hello to Ada", builtins))
    const message = Either.getOrThrow(first as Either.Either<any, string>).choices[0].message
    expect(message.content).toBe("[demo model] Calling text.template.")
    expect(message.tool_calls).toEqual([{
      id: "call_demo_1",
      type: "function",
      function: {
        name: "text-template",
        arguments: JSON.stringify({ template: "Hello, {{name}}!", variables: { name: "Ada" } })
      }
    }])
    const base = request("Say hello to Ada", builtins)
    const after = DemoModel.complete({
      ...base,
      messages: [...base.messages, message, {
        role: "tool",
        tool_call_id: "call_demo_1",
        content: JSON.stringify({ output: { text: "Hello, Ada!" } })
      }]
    })
    const answer = Either.getOrThrow(after as Either.Either<any, string>).choices[0]
    expect(answer.finish_reason).toBe("stop")
    expect(answer.message.content).toBe("[demo model] I called text.template; it returned {\"text\":\"Hello, Ada!\"}")
    expect(DemoModel.complete({ messages: "not a list" })).toEqual(Either.left("not a chat-completions request"))
  })
})
