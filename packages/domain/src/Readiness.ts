import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * Named checks behind `GET /readyz` (cluster storage, Redis, ...): each fails with a short reason.
 * The process composing the runner registers what it depends on.
 */
export class Readiness extends Context.Tag("@altan/domain/Readiness")<Readiness, {
  readonly checks: ReadonlyArray<readonly [name: string, check: Effect.Effect<void, string>]>
}>() {}

export const layer = (
  checks: ReadonlyArray<readonly [string, Effect.Effect<void, string>]>
): Layer.Layer<Readiness> => Layer.succeed(Readiness, { checks })

/** Runs every check, with a time limit each. */
export const run = Effect.flatMap(Readiness, ({ checks }) =>
  Effect.forEach(checks, ([name, check]) =>
    check.pipe(
      Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "timed out" }),
      Effect.match({ onFailure: (reason) => [name, reason] as const, onSuccess: () => [name, "ok"] as const })
    ), { concurrency: "unbounded" }))
