import { Api } from "@altan/domain/Api"
import { Unavailable } from "@altan/domain/Errors"
import * as Readiness from "@altan/domain/Readiness"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"

/** `/healthz` (the process answers) and `/readyz` (its `Readiness` checks pass): probes, no authentication. */
export const HealthLive = HttpApiBuilder.group(Api, "health", (handlers) =>
  handlers
    .handle("healthz", () => Effect.succeed({ status: "ok" as const }))
    .handle("readyz", () =>
      Effect.gen(function*() {
        const results = yield* Readiness.run
        const checks = Object.fromEntries(results)
        if (results.every(([, r]) => r === "ok")) return { status: "ok" as const, checks }
        return yield* new Unavailable({ message: "not ready", details: { checks } })
      })))
