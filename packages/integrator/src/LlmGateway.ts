import { Egress, EgressDenied, EgressFailed, type EgressMethod } from "@altan/domain/Egress"
import type { TenantId } from "@altan/domain/Ids"
import {
  type ChatMessage,
  type Completion,
  type FunctionTool,
  type LlmAttempt,
  LlmBadResponse,
  LlmNotConfigured,
  LlmUnavailable,
  type ToolCall
} from "@altan/domain/Llm"
import { ownParameters } from "@altan/domain/LlmConfig"
import { countLlmTokens } from "@altan/domain/Metrics"
import { retryAfterMs } from "@altan/domain/RetryAfter"
import { maskSecrets, maskValues, maskValuesDeep } from "@altan/domain/Secret"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import OpenAI from "openai"
import * as Retry from "./Retry.js"
import { SecretStore } from "./SecretStore.js"
import { TenantConfig } from "./TenantConfig.js"

/** Tuning of LLM calls. */
export class LlmGatewayConfig extends Context.Tag("@altan/integrator/LlmGatewayConfig")<LlmGatewayConfig, {
  /** One request's time limit (`LLM_TIMEOUT`). */
  readonly timeout: Duration.Duration
  /** Tries per LLM before its fallbacks take over (`LLM_MAX_ATTEMPTS`). */
  readonly maxAttempts: number
  /** First backoff delay; doubled per retry, with full jitter. */
  readonly baseDelay: Duration.Duration
  /** The longest `Retry-After` honoured; longer waits move on to the fallbacks. */
  readonly maxRetryAfter: Duration.Duration
  /** Largest accepted response body (`LLM_MAX_RESPONSE_BYTES`). */
  readonly maxResponseBytes: number
}>() {}

export const defaults: LlmGatewayConfig["Type"] = {
  timeout: Duration.seconds(60),
  maxAttempts: 3,
  baseDelay: Duration.millis(250),
  maxRetryAfter: Duration.seconds(20),
  maxResponseBytes: 2 * 1024 * 1024
}

export const layerConfigValue = (options?: Partial<LlmGatewayConfig["Type"]>): Layer.Layer<LlmGatewayConfig> =>
  Layer.succeed(LlmGatewayConfig, { ...defaults, ...options })

export const layerConfig = Layer.effect(
  LlmGatewayConfig,
  Effect.gen(function*() {
    return {
      ...defaults,
      timeout: yield* Config.duration("LLM_TIMEOUT").pipe(Config.withDefault(defaults.timeout)),
      maxAttempts: yield* Config.integer("LLM_MAX_ATTEMPTS").pipe(Config.withDefault(defaults.maxAttempts)),
      maxResponseBytes: yield* Config.integer("LLM_MAX_RESPONSE_BYTES").pipe(
        Config.withDefault(defaults.maxResponseBytes)
      )
    }
  })
)

/** OpenAI function names allow `[A-Za-z0-9_-]`; tool ids use `.`, never `-`, so the mapping is reversible. */
export const functionName = (toolId: string) => toolId.replace(/\./g, "-")
export const toolIdOf = (name: string) => name.replace(/-/g, ".")

/** `https://host/v1/chat/completions` -> `https://host/v1`: the SDK appends the path itself. */
export const baseUrlOf = (endpoint: string) => endpoint.replace(/\/+$/, "").replace(/\/chat\/completions$/, "")

/**
 * Where the runtime of the LLM call the SDK is making (its span, its tracer) rides to the SDK's `fetch`, which runs
 * the egress request in it, so that request is a child of the call's span, in the task's trace. The SDK spreads the
 * call's `fetchOptions` into `fetch`'s init. (Not an `AsyncLocalStorage`: on Node 20 one makes every promise of the
 * process about 2.5x slower.)
 */
const callRuntime = Symbol.for("@altan/integrator/LlmGateway/callRuntime")

/**
 * `fetch` for the SDK over the egress guard: an LLM endpoint may be any public host the tenant
 * configured, never a private or metadata address (unless the operator allowed it), and its answer is
 * read up to `maxBytes` only.
 */
const egressFetch =
  (egress: Egress["Type"], maxBytes: number, timeoutMs: number): typeof fetch => async (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url
    const headers: Record<string, string> = {}
    new Headers(init?.headers).forEach((value, name) => {
      headers[name] = value
    })
    const body = typeof init?.body === "string" || init?.body instanceof Uint8Array ? init.body : undefined
    const runtime = (init as { readonly [callRuntime]?: Runtime.Runtime<never> } | undefined)?.[callRuntime]
    const exit = await (runtime ? Runtime.runPromiseExit(runtime) : Effect.runPromiseExit)(
      egress.request({
        url,
        method: (init?.method ?? "GET").toUpperCase() as EgressMethod,
        headers,
        ...(body !== undefined ? { body } : {}),
        allowHosts: "any-public",
        maxBytes,
        timeoutMs
      }),
      init?.signal ? { signal: init.signal } : undefined
    )
    if (Exit.isFailure(exit)) throw Cause.squash(exit.cause)
    const { body: bytes, headers: responseHeaders, status } = exit.value
    return new Response(status === 204 || status === 304 ? null : bytes, { status, headers: responseHeaders })
  }

/** A call that may succeed if tried again (a timeout, no connection, 408, 429, 5xx); `retryAfterMs` as asked. */
class Transient extends Data.TaggedClass("Transient")<{
  readonly message: string
  readonly retryAfterMs: number | undefined
}> {
  static is(u: unknown): u is Transient {
    return Predicate.isTagged(u, "Transient")
  }
}

/** A call that would fail the same way again (refused by the egress guard, another 4xx). */
class Permanent extends Data.TaggedClass("Permanent")<{ readonly message: string }> {}

/** An answer that is not a usable response (not JSON, or unreadable). */
class BadResponse extends Data.TaggedClass("BadResponse")<{ readonly message: string }> {
  static is(u: unknown): u is BadResponse {
    return Predicate.isTagged(u, "BadResponse")
  }
}

type Failure = Transient | Permanent | BadResponse

/** What became of a failed call, its messages masked (`mask`): an upstream may echo the key it was sent. */
const classify = (error: unknown, mask: (text: string) => string): Failure => {
  const transient = (message: string, waitMs?: number) =>
    new Transient({ message: mask(message), retryAfterMs: waitMs })
  const permanent = (message: string) => new Permanent({ message: mask(message) })
  const badResponse = (message: string) => new BadResponse({ message: mask(message) })
  if (error instanceof OpenAI.APIConnectionTimeoutError) return transient("timed out")
  if (error instanceof OpenAI.APIConnectionError) {
    const cause = error.cause
    if (cause instanceof EgressDenied) return permanent(`egress_denied: ${cause.message}`)
    if (cause instanceof EgressFailed && cause.reason === "timeout") return transient("timed out")
    if (cause instanceof EgressFailed && !cause.retryable) return badResponse(cause.message)
    return transient("could not connect")
  }
  if (error instanceof OpenAI.APIError) {
    const status = error.status ?? 0
    if (status === 429 || status >= 500 || status === 408) {
      return transient(
        `HTTP ${status}`,
        error.headers ? retryAfterMs(Object.fromEntries(error.headers)) : undefined
      )
    }
    return permanent(`HTTP ${status}: ${error.message.slice(0, 200)}`)
  }
  if (error instanceof SyntaxError) return badResponse("the response is not JSON")
  return transient(error instanceof Error ? error.message.slice(0, 200) : "failed")
}

const toOpenAi = (message: ChatMessage): OpenAI.Chat.Completions.ChatCompletionMessageParam => {
  switch (message.role) {
    case "assistant":
      return {
        role: "assistant",
        content: message.content,
        ...(message.tool_calls && message.tool_calls.length > 0
          ? {
            tool_calls: message.tool_calls.map((c) => ({
              id: c.id,
              type: "function" as const,
              function: { name: functionName(c.name), arguments: JSON.stringify(c.arguments) }
            }))
          }
          : {})
      }
    case "tool":
      return { role: "tool", tool_call_id: message.tool_call_id, content: message.content }
    default:
      return { role: message.role, content: message.content }
  }
}

/**
 * Parses the model's tool calls with the call's `secrets` masked in names and arguments (in the parsed
 * arguments, so a JSON escape cannot hide one); the names of the ones whose arguments are not a JSON object.
 */
const parseToolCalls = (
  calls: ReadonlyArray<OpenAI.Chat.Completions.ChatCompletionMessageToolCall> | undefined,
  secrets: ReadonlyArray<string | undefined>
): Either.Either<ReadonlyArray<ToolCall>, ReadonlyArray<string>> => {
  const parsed: Array<ToolCall> = []
  const bad: Array<string> = []
  for (const call of calls ?? []) {
    if (call.type !== "function") continue
    const name = maskValues(call.function.name, secrets)
    try {
      const args = call.function.arguments.trim() === "" ? {} : JSON.parse(call.function.arguments)
      if (typeof args !== "object" || args === null || Array.isArray(args)) throw new Error("not an object")
      // arguments too deep to serialize again count as unusable, like invalid JSON
      parsed.push({ id: call.id, name: toolIdOf(name), arguments: maskValuesDeep(args, secrets) })
    } catch {
      bad.push(name)
    }
  }
  return bad.length > 0 ? Either.left(bad) : Either.right(parsed)
}

/** Calls a tenant's OpenAI-compatible chat-completions endpoint with its own credentials. */
export class LlmGateway extends Context.Tag("@altan/integrator/LlmGateway")<LlmGateway, {
  readonly complete: (
    tenantId: TenantId,
    llmId: string,
    request: { readonly messages: ReadonlyArray<ChatMessage>; readonly tools: ReadonlyArray<FunctionTool> }
  ) => Effect.Effect<Completion, LlmUnavailable | LlmBadResponse | LlmNotConfigured>
}>() {}

export const layer: Layer.Layer<LlmGateway, never, TenantConfig | SecretStore | LlmGatewayConfig | Egress> = Layer
  .effect(
    LlmGateway,
    Effect.gen(function*() {
      const configs = yield* TenantConfig
      const secrets = yield* SecretStore
      const tuning = yield* LlmGatewayConfig
      const fetchGuarded = egressFetch(yield* Egress, tuning.maxResponseBytes, Duration.toMillis(tuning.timeout))
      // doubling from `baseDelay` with full jitter, uncapped: `maxRetryAfter` bounds the wait
      const retryPolicy: Retry.Policy<Failure> = {
        maxAttempts: tuning.maxAttempts,
        baseDelay: tuning.baseDelay,
        maxDelay: Duration.infinity,
        maxWait: tuning.maxRetryAfter,
        retryable: Transient.is,
        retryAfter: (failure) => (Transient.is(failure) ? failure.retryAfterMs : undefined)
      }

      // One SDK client per tenant LLM, rebuilt only when its endpoint or key changes: not one per turn.
      const clients = new Map<string, { readonly endpoint: string; readonly key: string; readonly client: OpenAI }>()
      const clientFor = (id: string, endpoint: string, apiKey: Redacted.Redacted | undefined) => {
        const key = apiKey ? Redacted.value(apiKey) : "unused"
        const cached = clients.get(id)
        if (cached && cached.endpoint === endpoint && cached.key === key) return cached.client
        const client = new OpenAI({
          apiKey: key,
          baseURL: baseUrlOf(endpoint),
          // the guard enforces the time limit; the SDK's own is a backstop
          timeout: Duration.toMillis(tuning.timeout) + 1_000,
          maxRetries: 0,
          fetch: fetchGuarded
        })
        clients.set(id, { endpoint, key, client })
        return client
      }

      const complete: LlmGateway["Type"]["complete"] = Effect.fn("LlmGateway.complete", {
        kind: "client",
        attributes: { "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai" },
        captureStackTrace: false
      })(
        function*(tenantId, llmId, request) {
          yield* Effect.annotateCurrentSpan({ "altan.tenant_id": tenantId, "altan.llm_id": llmId })
          const config = yield* configs.getLlm(tenantId, llmId).pipe(
            Effect.flatMap(Option.match({
              onNone: () =>
                Effect.fail(new LlmNotConfigured({ message: `no LLM "${llmId}" is configured for this tenant` })),
              onSome: Effect.succeed
            }))
          )
          const apiKey = config.auth.type === "api_key"
            ? yield* secrets.get(tenantId, config.auth.key).pipe(
              Effect.mapError((e) => new LlmUnavailable({ message: e.message, attempts: [] })),
              Effect.flatMap(Option.match({
                onNone: () =>
                  Effect.fail(
                    new LlmNotConfigured({
                      message: `the secret "${(config.auth as { key: string }).key}" of LLM "${llmId}" is not set`
                    })
                  ),
                onSome: Effect.succeed
              }))
            )
            : undefined
          const client = clientFor(`${tenantId}/${llmId}`, config.endpoint, apiKey)
          const tools = request.tools.map((t) => ({
            type: "function" as const,
            function: { name: functionName(t.name), description: t.description, parameters: t.parameters }
          }))
          const attempts: Array<LlmAttempt> = []
          const usage = { prompt_tokens: 0, completion_tokens: 0 }

          // an upstream may echo the key it was sent, and a model may repeat it: it must not reach the task,
          // its events, the logs, a tool or the next LLM
          const sent = [apiKey && Redacted.value(apiKey)]
          const mask = (text: string) => maskSecrets(text, sent)

          const model = config.model ?? config.llm_id
          yield* Effect.annotateCurrentSpan("gen_ai.request.model", model)
          // our own keys (prices) are not the model's
          const parameters = config.parameters === undefined
            ? undefined
            : Object.fromEntries(Object.entries(config.parameters).filter(([k]) => !ownParameters.has(k)))
          const call = (messages: ReadonlyArray<ChatMessage>) =>
            Effect.flatMap(Effect.runtime<never>(), (runtime) =>
              Effect.tryPromise({
                try: (signal) =>
                  client.chat.completions.create({
                    ...parameters,
                    model,
                    messages: messages.map(toOpenAi),
                    ...(tools.length > 0 ? { tools } : {})
                  } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming, {
                    signal,
                    fetchOptions: { [callRuntime]: runtime } as NonNullable<OpenAI.RequestOptions["fetchOptions"]>
                  }),
                catch: (error) => classify(error, mask)
              }))

          /** Calls until an answer, retrying transient failures with full-jitter backoff and Retry-After. */
          const answer = (messages: ReadonlyArray<ChatMessage>) =>
            Retry.retry((attempt) =>
              Effect.gen(function*() {
                const started = yield* Clock.currentTimeMillis
                const result = yield* Effect.either(call(messages))
                const duration_ms = (yield* Clock.currentTimeMillis) - started
                if (Either.isRight(result)) {
                  attempts.push({ llm_id: llmId, outcome: "ok", duration_ms })
                  return result.right
                }
                const failure = result.left
                const last = attempt >= tuning.maxAttempts || !Transient.is(failure)
                attempts.push({
                  llm_id: llmId,
                  outcome: last ? "failed" : "retry",
                  error: failure.message,
                  duration_ms
                })
                yield* Effect.logWarning(`LLM call failed (${last ? "giving up" : "will retry"}): ${failure.message}`)
                  .pipe(Effect.annotateLogs({ "tenant.id": tenantId, "llm.id": llmId, attempt }))
                return yield* Effect.fail(failure)
              }), retryPolicy).pipe(
                Effect.map(({ value }) => value),
                Effect.mapError(({ attempts: tried, error, wait }) =>
                  BadResponse.is(error)
                    ? new LlmBadResponse({ message: error.message, attempts })
                    : wait !== undefined
                    ? new LlmUnavailable({
                      message: `LLM "${llmId}" asked to wait ${Duration.format(wait)}; moving on`,
                      attempts
                    })
                    : new LlmUnavailable({
                      message: `LLM "${llmId}" failed after ${tried} attempt(s): ${error.message}`,
                      attempts
                    })
                )
              )

          let responseModel: string | undefined
          const toCompletion = (response: OpenAI.Chat.Completions.ChatCompletion) => {
            usage.prompt_tokens += response.usage?.prompt_tokens ?? 0
            usage.completion_tokens += response.usage?.completion_tokens ?? 0
            if (typeof response.model === "string") responseModel = response.model
            return response.choices?.[0]?.message
          }
          // whatever the answer, the tokens it cost are counted and on the span (GenAI conventions)
          yield* Effect.addFinalizer(() =>
            Effect.zipRight(
              Effect.annotateCurrentSpan({
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                ...(responseModel !== undefined ? { "gen_ai.response.model": responseModel } : {})
              }),
              countLlmTokens(tenantId, model, { input: usage.prompt_tokens, output: usage.completion_tokens })
            )
          )

          let message = toCompletion(yield* answer(request.messages))
          if (!message) return yield* new LlmBadResponse({ message: "the response has no choices", attempts })
          let calls = parseToolCalls(message.tool_calls, sent)
          if (Either.isLeft(calls)) {
            // One repair round trip: tell the model what was wrong and ask again.
            attempts[attempts.length - 1] = { ...attempts[attempts.length - 1]!, outcome: "bad_response" }
            const repair: ChatMessage = {
              role: "user",
              content:
                `The arguments of your call(s) to ${calls.left.map(toolIdOf).join(", ")} were not a valid JSON ` +
                `object. Answer again; tool call arguments must be one JSON object matching the tool's schema.`
            }
            message = toCompletion(yield* answer([...request.messages, repair]))
            if (!message) return yield* new LlmBadResponse({ message: "the response has no choices", attempts })
            calls = parseToolCalls(message.tool_calls, sent)
            if (Either.isLeft(calls)) {
              return yield* new LlmBadResponse({
                message: `the model sent invalid JSON arguments for ${calls.left.map(toolIdOf).join(", ")} twice`,
                attempts
              })
            }
            attempts[attempts.length - 1] = { ...attempts[attempts.length - 1]!, outcome: "repaired" }
          }
          return {
            llm_id: llmId,
            content: typeof message.content === "string" ? mask(message.content) : null,
            tool_calls: calls.right,
            usage,
            attempts
          }
        },
        Effect.scoped
      )

      return { complete }
    })
  )
