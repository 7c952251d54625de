import type { TenantId } from "@altan/domain/Ids"
import type { ChatMessage, FunctionTool } from "@altan/domain/Llm"
import * as LlmGateway from "@altan/integrator/LlmGateway"
import * as SecretStore from "@altan/integrator/SecretStore"
import * as TenantConfig from "@altan/integrator/TenantConfig"
import * as Egress from "@altan/tool/Egress"
import { EgressConfig } from "@altan/tool/EgressConfig"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { startFakeOpenAi } from "./FakeOpenAi.js"

const acme = "acme" as TenantId
const key = "sk-test-7f3a9c"
let fake: Awaited<ReturnType<typeof startFakeOpenAi>>
beforeAll(async () => {
  fake = await startFakeOpenAi()
})
afterAll(() => fake.close())

/** The gateway over memory stores and the real egress guard (loopback allowed, as an operator would for a local model). */
const gateway = Layer.unwrapEffect(Effect.sync(() =>
  LlmGateway.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(TenantConfig.layerMemory, SecretStore.layerMemory)),
    Layer.provide(
      LlmGateway.layerConfigValue({ baseDelay: Duration.millis(10), maxRetryAfter: Duration.seconds(2) })
    ),
    Layer.provide(Egress.layer.pipe(Layer.provide(EgressConfig.layer({ operatorAllowHosts: ["127.0.0.1"] }))))
  )
))

/** A tenant LLM at the fake, with its key in the vault; then one completion. */
const complete = (
  request: { readonly messages: ReadonlyArray<ChatMessage>; readonly tools?: ReadonlyArray<FunctionTool> },
  options: { readonly llm?: string; readonly configure?: boolean; readonly secret?: boolean } = {}
) =>
  Effect.gen(function*() {
    const configs = yield* TenantConfig.TenantConfig
    const secrets = yield* SecretStore.SecretStore
    if (options.configure !== false) {
      yield* configs.putLlm(acme, {
        llm_id: "main",
        endpoint: fake.url,
        auth: { type: "api_key", key: "openai_key" },
        model: "gpt-test",
        parameters: { temperature: 0 }
      })
    }
    if (options.secret !== false) yield* Effect.orDie(secrets.put(acme, "openai_key", Redacted.make(key)))
    const llms = yield* LlmGateway.LlmGateway
    return yield* Effect.either(llms.complete(acme, options.llm ?? "main", { tools: [], ...request }))
  }).pipe(Effect.provide(gateway))

const user = (content: string): ChatMessage => ({ role: "user", content })
const jsonParse: FunctionTool = {
  name: "json.parse",
  description: "Parses JSON.",
  parameters: { type: "object", properties: { text: { type: "string" } } }
}

describe("LlmGateway", () => {
  it.live("speaks chat completions: the tenant's key, its model and parameters, tools by function name, calls mapped back", () =>
    Effect.gen(function*() {
      fake.script({ kind: "tools", calls: [{ name: "json-parse", arguments: `{"text":"[1]"}` }] })
      const answer = Either.getOrThrow(yield* complete({ messages: [user("parse [1]")], tools: [jsonParse] }))
      expect(answer).toMatchObject({
        llm_id: "main",
        content: null,
        tool_calls: [{ name: "json.parse", arguments: { text: "[1]" } }],
        usage: { prompt_tokens: 11, completion_tokens: 7 },
        attempts: [{ llm_id: "main", outcome: "ok" }]
      })
      expect(fake.received).toHaveLength(1)
      const [sent] = fake.received
      expect(sent!.path).toBe("/v1/chat/completions")
      expect(sent!.authorization).toBe(`Bearer ${key}`)
      expect(sent!.body).toMatchObject({
        model: "gpt-test",
        temperature: 0,
        messages: [{ role: "user", content: "parse [1]" }],
        tools: [{ type: "function", function: { name: "json-parse", parameters: jsonParse.parameters } }]
      })
    }))

  it.live("a transient failure is retried (attempts say so), a client error is not", () =>
    Effect.gen(function*() {
      fake.script({ kind: "status", status: 503 }, { kind: "answer", content: "fine" })
      const retried = Either.getOrThrow(yield* complete({ messages: [user("hi")] }))
      expect(retried.content).toBe("fine")
      expect(retried.attempts.map((a) => a.outcome)).toEqual(["retry", "ok"])
      expect(retried.attempts[0]!.error).toBe("HTTP 503")

      fake.script({ kind: "status", status: 400, body: { error: { message: "bad model", type: "invalid_request" } } })
      const refused = yield* complete({ messages: [user("hi")] })
      expect(fake.received).toHaveLength(1)
      expect(Either.isLeft(refused) && refused.left).toMatchObject({
        _tag: "LlmUnavailable",
        message: `LLM "main" failed after 1 attempt(s): HTTP 400: 400 bad model`
      })
    }))

  it.live("a Retry-After over the limit moves on at once; one within it is waited out", () =>
    Effect.gen(function*() {
      fake.script({ kind: "status", status: 429, headers: { "retry-after": "30" } })
      const tooLong = yield* complete({ messages: [user("hi")] })
      expect(fake.received).toHaveLength(1)
      expect(Either.isLeft(tooLong) && tooLong.left.message).toBe(`LLM "main" asked to wait 30s; moving on`)

      fake.script({ kind: "status", status: 429, headers: { "retry-after": "1" } }, { kind: "answer", content: "ok" })
      expect(Either.isRight(yield* complete({ messages: [user("hi")] }))).toBe(true)
      expect(fake.received[1]!.at - fake.received[0]!.at).toBeGreaterThanOrEqual(990)
    }))

  it.live("arguments that are not a JSON object get one repair round trip; twice is a bad response", () =>
    Effect.gen(function*() {
      fake.script(
        { kind: "tools", calls: [{ name: "json-parse", arguments: "{not json" }] },
        { kind: "tools", calls: [{ name: "json-parse", arguments: `{"text":"1"}` }] }
      )
      const repaired = Either.getOrThrow(yield* complete({ messages: [user("go")], tools: [jsonParse] }))
      expect(repaired.attempts.map((a) => a.outcome)).toEqual(["bad_response", "repaired"])
      expect(fake.received[1]!.body.messages.at(-1).content).toContain("json.parse were not a valid JSON object")

      fake.script({ kind: "tools", calls: [{ name: "json-parse", arguments: "[1,2]" }] })
      const bad = yield* complete({ messages: [user("go")], tools: [jsonParse] })
      expect(Either.isLeft(bad) && bad.left).toMatchObject({
        _tag: "LlmBadResponse",
        message: "the model sent invalid JSON arguments for json.parse twice"
      })
    }))

  it.live("an LLM that is not configured, or whose key is not set, is LlmNotConfigured and sends nothing", () =>
    Effect.gen(function*() {
      fake.script({ kind: "answer", content: "unused" })
      const unknown = yield* complete({ messages: [user("hi")] }, { llm: "other" })
      expect(Either.isLeft(unknown) && unknown.left).toMatchObject({
        _tag: "LlmNotConfigured",
        message: `no LLM "other" is configured for this tenant`
      })
      const noKey = yield* complete({ messages: [user("hi")] }, { secret: false })
      expect(Either.isLeft(noKey) && noKey.left).toMatchObject({
        _tag: "LlmNotConfigured",
        message: `the secret "openai_key" of LLM "main" is not set`
      })
      expect(fake.received).toHaveLength(0)
    }))

  it.live("a key the upstream or the model echoes never comes back in the answer", () =>
    Effect.gen(function*() {
      fake.script({ kind: "answer", content: `my key is ${key}` })
      const answer = Either.getOrThrow(yield* complete({ messages: [user("hi")] }))
      expect(answer.content).not.toContain(key)
      fake.script({ kind: "status", status: 401, body: { error: { message: `Incorrect API key ${key}` } } })
      const refused = yield* complete({ messages: [user("hi")] })
      expect(Either.isLeft(refused) && refused.left.message).not.toContain(key)
      expect(JSON.stringify(Either.isLeft(refused) && refused.left)).not.toContain(key)
    }))
})
