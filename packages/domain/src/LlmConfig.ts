import * as Schema from "effect/Schema"
import { SecretName } from "./Secret.js"

/** An `http(s)` URL. */
export const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    try {
      const u = new URL(s)
      return u.protocol === "https:" || u.protocol === "http:" ? undefined : "must be an http or https URL"
    } catch {
      return "must be an absolute http or https URL"
    }
  }, { identifier: "HttpUrl" })
)

export const LlmId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, {
    message: () => "llm_id must be 1-128 letters, digits, . _ : or -"
  })
)

/** How the gateway authenticates to the LLM: `key` names a tenant secret, never the key itself. */
export const LlmAuth = Schema.Union(
  Schema.Struct({ type: Schema.Literal("api_key"), key: SecretName }),
  Schema.Struct({ type: Schema.Literal("none") })
)

/** A tenant's LLM, exactly as the seed writes it (`PUT /v1/llms/{llm_id}`). */
export const LlmConfig = Schema.Struct({
  llm_id: LlmId,
  endpoint: HttpUrl,
  auth: LlmAuth,
  model: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  /**
   * What the model costs, in USD per 1,000 tokens, for the tenant's `cost_usd` budget. `parameters.price_per_1k_input`
   * and `parameters.price_per_1k_output` are read too (and not sent to the model).
   */
  pricing: Schema.optional(Schema.Struct({
    input_per_1k: Schema.Number.pipe(Schema.finite(), Schema.nonNegative()),
    output_per_1k: Schema.Number.pipe(Schema.finite(), Schema.nonNegative())
  })),
  parameters: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type LlmConfig = typeof LlmConfig.Type

/** The cost in USD of a turn of this LLM, from its `pricing` or `parameters.price_per_1k_*` (0 when it has neither). */
export const costOf = (config: LlmConfig, promptTokens: number, completionTokens: number): number => {
  const param = (name: string) => {
    const v = config.parameters?.[name]
    return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0
  }
  const input = config.pricing?.input_per_1k ?? param("price_per_1k_input")
  const output = config.pricing?.output_per_1k ?? param("price_per_1k_output")
  return (promptTokens * input + completionTokens * output) / 1000
}

/** Parameters of our own in `parameters`, which the model's API is not sent. */
export const ownParameters: ReadonlySet<string> = new Set(["price_per_1k_input", "price_per_1k_output"])
