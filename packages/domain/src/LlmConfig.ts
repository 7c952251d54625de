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
  parameters: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type LlmConfig = typeof LlmConfig.Type
