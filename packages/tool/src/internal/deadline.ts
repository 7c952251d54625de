import { EgressFailed } from "@altan/domain/Egress"
import * as Effect from "effect/Effect"
import * as dns from "node:dns"
import { hostOf, safeUrl } from "./url.js"

/**
 * The total time limit of one request, redirects and DNS included. Plain timers, one per wait: racing an
 * Effect timeout fiber cost more than the whole guarded request on loopback.
 */
export interface Deadline {
  readonly remaining: () => number
  readonly failure: () => EgressFailed
}

/** The deadline of a request to `url` that started now and may take `timeoutMs`. */
export const makeDeadline = (url: string, timeoutMs: number): Deadline => {
  const end = Date.now() + timeoutMs
  return {
    remaining: () => Math.max(0, end - Date.now()),
    failure: () =>
      new EgressFailed({
        reason: "timeout",
        retryable: true,
        message: `${hostOf(url)} did not answer within ${timeoutMs} ms`,
        url: safeUrl(url)
      })
  }
}

/** What `abortable` rejects with once its time is up. */
export class TimedOut extends Error {}

/**
 * The promise as an Effect that aborts it through its signal when interrupted or once `ms` pass (then
 * rejecting with `TimedOut`): one controller and one timer per hop.
 */
export const abortable = <A, E>(
  ms: number,
  f: (signal: AbortSignal) => Promise<A>,
  onError: (error: unknown) => E
): Effect.Effect<A, E> =>
  Effect.async<A, E>((resume) => {
    const controller = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      controller.abort()
    }, ms)
    f(controller.signal).then(
      (value) => {
        clearTimeout(timer)
        resume(Effect.succeed(value))
      },
      (error) => {
        clearTimeout(timer)
        resume(Effect.fail(onError(timedOut ? new TimedOut() : error)))
      }
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      controller.abort()
    })
  })

/** Every address of `host`, in the resolver's order; a failure to resolve is a failure to connect. */
export const lookup = (host: string, url: URL, deadline: Deadline) =>
  Effect.async<ReadonlyArray<dns.LookupAddress>, EgressFailed>((resume) => {
    // dns.lookup cannot be cancelled; past the deadline its answer is ignored
    const timer = setTimeout(() => resume(Effect.fail(deadline.failure())), deadline.remaining())
    dns.lookup(host, { all: true, verbatim: true }, (error, addresses) => {
      clearTimeout(timer)
      if (error || addresses.length === 0) {
        resume(Effect.fail(
          new EgressFailed({
            reason: "connect",
            retryable: true,
            message: `${host} could not be resolved${error?.code ? ` (${error.code})` : ""}`,
            url: safeUrl(url)
          })
        ))
      } else {
        resume(Effect.succeed(addresses))
      }
    })
    return Effect.sync(() => clearTimeout(timer))
  })
