import { AlreadyProcessingMessage, MailboxFull, type PersistenceError, TypeId } from "@effect/cluster/ClusterError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"

/**
 * Asks again, a few times, when a call to an entity breaks rather than fails: a defect (the cluster transport broke
 * mid-request, a runner died while answering) or an interruption of the call (its handler was stopped on a runner
 * shutting down). Only for calls that are safe to repeat: side-effect free, or keyed so the callee runs them once.
 * The calling fiber's own interruption is not caught: it stops at the delay.
 */
export const reaskOnBreak = <A, E, R>(effect: Effect.Effect<A, E, R>, times = 3): Effect.Effect<A, E, R> =>
  Effect.catchAllCause(
    effect,
    (cause) =>
      Option.isNone(Cause.failureOption(cause)) && times > 0
        ? Effect.delay(reaskOnBreak(effect, times - 1), "500 millis")
        : Effect.failCause(cause)
  )

/** A message the cluster could not deliver (mailbox full, already in process, storage down): the runtime's failure. */
export type ClusterError = MailboxFull | AlreadyProcessingMessage | PersistenceError

/** `PersistenceError` has no `is` of its own: the test its siblings' make. */
const isPersistenceError = (u: unknown): u is PersistenceError =>
  Predicate.hasProperty(u, TypeId) && Predicate.isTagged(u, "PersistenceError")

/**
 * Whether `e` is a cluster delivery failure (see `ClusterError`), of any value or for `Effect.catchIf`; where the
 * error type is a type parameter, `Effect.catchIf(isClusterError<E>, ...)` keeps the rest of it.
 */
export function isClusterError<E extends { readonly _tag: string }>(e: E): e is Extract<E, ClusterError>
export function isClusterError(u: unknown): u is ClusterError
export function isClusterError(u: unknown): u is ClusterError {
  return MailboxFull.is(u) || AlreadyProcessingMessage.is(u) || isPersistenceError(u)
}
