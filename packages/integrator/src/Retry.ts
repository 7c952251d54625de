import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"

/** When to call an upstream again after a failed attempt: tool calls and LLM turns both follow one. */
export interface Policy<E> {
  /** Attempts in all, the first included. */
  readonly maxAttempts: number
  /** The first backoff's ceiling; it doubles per attempt, with full jitter. */
  readonly baseDelay: Duration.DurationInput
  /** No backoff is longer. */
  readonly maxDelay: Duration.DurationInput
  /** The longest wait accepted, an upstream's `Retry-After` included: a longer one ends the retries. */
  readonly maxWait: Duration.DurationInput
  readonly retryable: (error: E) => boolean
  /** How long the upstream asked to wait (its `Retry-After`), when it said: that wait replaces the backoff. */
  readonly retryAfter?: ((error: E) => number | undefined) | undefined
  /** The upstream's asked wait is served elsewhere (a rate budget the next attempt acquires): no sleep here. */
  readonly waitedElsewhere?: ((error: E) => boolean) | undefined
  /** Epoch millis: no retry is started whose wait would end after it (while it is still ahead). */
  readonly deadline?: number | undefined
}

/** Why `retry` stopped: the error of the last attempt, how many there were, and what stopped them. */
export interface GaveUp<E> {
  readonly error: E
  readonly attempts: number
  /** `wait`: the next attempt would have had to wait longer than `maxWait` (or past the deadline). */
  readonly reason: "not_retryable" | "attempts" | "wait"
  /** The wait that was refused, when `reason` is `wait`. */
  readonly wait?: Duration.Duration | undefined
}

/** The full-jitter wait before the attempt after `attempt` (1-based): random in [0, min(max, base * 2^(attempt-1))). */
export const jitter = (
  policy: Pick<Policy<unknown>, "baseDelay" | "maxDelay">,
  attempt: number
): Effect.Effect<Duration.Duration> =>
  Effect.map(Random.next, (r) =>
    Duration.millis(Math.floor(
      r * Math.min(
        Duration.toMillis(Duration.decode(policy.maxDelay)),
        Duration.toMillis(Duration.decode(policy.baseDelay)) * 2 ** (attempt - 1)
      )
    )))

/**
 * The schedule of a policy: its input is the failed attempt's error, its output the wait before the next one. It
 * stops on an error that is not retryable, after `maxAttempts`, and before a wait over `maxWait` or past the deadline;
 * `stopped` hears why when it is not the attempts.
 */
export const schedule = <E>(
  policy: Policy<E>,
  stopped: (reason: "not_retryable" | "wait", wait?: Duration.Duration) => void = () => {}
): Schedule.Schedule<Duration.Duration, E> => {
  const maxWait = Duration.decode(policy.maxWait)
  return Schedule.intersect(Schedule.recurs(Math.max(0, policy.maxAttempts - 1)), Schedule.identity<E>()).pipe(
    Schedule.whileInput((error: E) => {
      if (policy.retryable(error)) return true
      stopped("not_retryable")
      return false
    }),
    // `recurs` counts from 0 after the first attempt
    Schedule.modifyDelayEffect(([retries, error]) => {
      const asked = policy.retryAfter?.(error)
      if (asked === undefined) return jitter(policy, retries + 1)
      // the asked wait is bounded by `maxWait` even when another part serves it
      return Effect.succeed(
        Duration.greaterThan(Duration.millis(asked), maxWait) ?
          Duration.millis(asked) :
          policy.waitedElsewhere?.(error)
          ? Duration.zero
          : Duration.millis(asked)
      )
    }),
    Schedule.delays,
    Schedule.whileOutputEffect((wait) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const pastDeadline = policy.deadline !== undefined && now < policy.deadline &&
          now + Duration.toMillis(wait) > policy.deadline
        if (!Duration.greaterThan(wait, maxWait) && !pastDeadline) return true
        stopped("wait", wait)
        return false
      })
    )
  )
}

/**
 * Runs `attempt(n)` (n from 1) until it succeeds or the policy stops; the answer and the failure say how many
 * attempts were made.
 */
export const retry = <A, E, R>(
  attempt: (n: number) => Effect.Effect<A, E, R>,
  policy: Policy<E>
): Effect.Effect<{ readonly value: A; readonly attempts: number }, GaveUp<E>, R> =>
  Effect.suspend(() => {
    let attempts = 0
    let reason: GaveUp<E>["reason"] = "attempts"
    let refused: Duration.Duration | undefined
    return Effect.suspend(() => attempt(++attempts)).pipe(
      Effect.retry(schedule(policy, (why, wait) => {
        reason = why
        refused = wait
      })),
      Effect.map((value) => ({ value, attempts })),
      Effect.mapError((error): GaveUp<E> => ({ error, attempts, reason, ...(refused ? { wait: refused } : {}) }))
    )
  })
