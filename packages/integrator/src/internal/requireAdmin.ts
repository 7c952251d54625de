import { Forbidden } from "@altan/domain/Errors"
import { CurrentPrincipal } from "@altan/domain/Principal"
import * as Effect from "effect/Effect"

/** Configuration routes are for the tenant's admins. */
export const requireAdmin = Effect.flatMap(CurrentPrincipal, (principal) =>
  principal.role === "admin"
    ? Effect.succeed(principal)
    : Effect.fail(new Forbidden({ message: "this route needs the admin role" })))
