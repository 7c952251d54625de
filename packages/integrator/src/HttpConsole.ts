import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import { html } from "./console/page.js"
import { js } from "./console/script.js"
import { css } from "./console/style.js"

/**
 * Only this origin's scripts, styles and API; no inline code, no framing, no referrer. Task inputs and outputs shown by
 * the console are user and model data: should one slip past the script's text-only rendering, it still cannot run.
 */
const securityHeaders = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-cache"
}

const asset = (body: string, contentType: string) =>
  Effect.succeed(HttpServerResponse.text(body, { contentType, headers: securityHeaders }))

/** The console at `/console`: a page and its script and stylesheet, built into the package (no CDN, no files). */
export const ConsoleLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    yield* router.get("/console", asset(html, "text/html; charset=utf-8"))
    yield* router.get("/console/console.js", asset(js, "text/javascript; charset=utf-8"))
    yield* router.get("/console/console.css", asset(css, "text/css; charset=utf-8"))
  })
)
