import * as Context from "effect/Context"
import * as Schema from "effect/Schema"
import { TenantId, UserId } from "./Ids.js"

export const Role = Schema.Literal("admin", "member")
export type Role = typeof Role.Type

/** Who is calling: taken from a verified token, never from a path or body. */
export class Principal extends Schema.Class<Principal>("Principal")({
  tenantId: TenantId,
  userId: UserId,
  role: Role
}) {}

/** The principal of the current request, provided by the authentication middleware. */
export class CurrentPrincipal extends Context.Tag("@altan/domain/CurrentPrincipal")<CurrentPrincipal, Principal>() {}
