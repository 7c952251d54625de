import * as Schema from "effect/Schema"
import { HttpUrl, LlmId } from "./LlmConfig.js"

/** `host` or `host:port`; `*.example.com` matches subdomains only. */
export const EgressHost = Schema.String.pipe(
  Schema.pattern(/^(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$/, { message: () => "egress host must be host or host:port" })
)

/** Per-provider overrides, e.g. a regional endpoint or a Salesforce instance URL. */
export const ProviderSettings = Schema.Struct({
  base_url: Schema.optional(HttpUrl)
})

/** A tenant's settings (`PUT /v1/settings`). */
export const Settings = Schema.Struct({
  default_llm: Schema.optional(LlmId),
  fallback_llms: Schema.optionalWith(Schema.Array(LlmId).pipe(Schema.maxItems(5)), { default: () => [] }),
  egress_allowlist: Schema.optionalWith(Schema.Array(EgressHost).pipe(Schema.maxItems(256)), { default: () => [] }),
  providers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: ProviderSettings }), {
    default: () => ({})
  })
})
export type Settings = typeof Settings.Type

export const emptySettings: Settings = { fallback_llms: [], egress_allowlist: [], providers: {} }
