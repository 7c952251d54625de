import { Unavailable } from "@altan/domain/Errors"
import { RedisError } from "@altan/redis/Redis"
import * as Effect from "effect/Effect"

/**
 * The integrator's stores fail with a `RedisError` defect while their Redis is unreachable: for the caller that is
 * `Unavailable` (nothing was executed; asking again later is safe), not a crash.
 */
export const storeUnavailable = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Unavailable, R> =>
  Effect.catchAllDefect(effect, (defect) =>
    defect instanceof RedisError
      ? Effect.fail(
        new Unavailable({ message: `the connection's configuration cannot be read now: ${defect.message}` })
      )
      : Effect.die(defect))
