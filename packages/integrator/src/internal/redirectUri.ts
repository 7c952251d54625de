import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { IntegratorConfig } from "../IntegratorConfig.js"

const first = (header: string | undefined) => header?.split(",")[0]?.trim() || undefined

/**
 * Where an OAuth2 provider sends the user back: `OAUTH_REDIRECT_URL`, else this edge's own callback as the current
 * request reached it (its `Host`, or `X-Forwarded-Host`/`-Proto` behind a proxy). None outside a request when
 * `OAUTH_REDIRECT_URL` is unset.
 */
export const oauthRedirectUri: Effect.Effect<Option.Option<string>> = Effect.gen(function*() {
  const config = yield* Effect.serviceOption(IntegratorConfig)
  if (Option.isSome(config) && Option.isSome(config.value.oauthRedirectUrl)) return config.value.oauthRedirectUrl
  const request = yield* Effect.serviceOption(HttpServerRequest.HttpServerRequest)
  return Option.map(request, ({ headers }) => {
    const host = first(headers["x-forwarded-host"]) ?? headers["host"] ?? "localhost"
    const proto = first(headers["x-forwarded-proto"]) === "https" ? "https" : "http"
    return `${proto}://${host}/v1/oauth/callback`
  })
})
