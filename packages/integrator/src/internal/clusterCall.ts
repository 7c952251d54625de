import { type ClusterError, isClusterError } from "@altan/domain/EntityCall"
import { Unavailable } from "@altan/domain/Errors"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** `E` without its cluster delivery failures. */
export type WithoutClusterError<E> = Exclude<E, Extract<E, ClusterError>>

/** Cluster delivery failures are the runtime's, not the caller's: 503. */
export const clusterUnavailable = (e: { readonly _tag: string }) =>
  new Unavailable({ message: `the agent service could not take the request (${e._tag}); retry later` })

/** How long the edge waits for the agent service beyond any wait the request itself asked for. */
const callTimeout = Duration.seconds(15)

/**
 * Bounds a call into the cluster: while no runner owns the session's shard, the cluster retries
 * delivery indefinitely, and the caller gets a 503 rather than a hung request.
 */
export const orUnavailable = <A, E extends { readonly _tag: string }, R>(
  effect: Effect.Effect<A, E, R>,
  extraWait: Duration.DurationInput = 0
): Effect.Effect<A, WithoutClusterError<E> | Unavailable, R> =>
  effect.pipe(
    // instantiated: a generic `E` needs the overload that keeps the rest of it
    Effect.catchIf(isClusterError<E>, (e) => Effect.fail(clusterUnavailable(e))),
    Effect.timeoutFail({
      duration: Duration.sum(callTimeout, extraWait),
      onTimeout: () => new Unavailable({ message: "the agent service did not answer in time; retry later" })
    })
  )
