import { SessionId, type TenantId } from "@altan/domain/Ids"
import { Task } from "@altan/domain/Task"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"

/** Everything a session remembers: its tasks, conversation and variables. */
export const SessionState = Schema.Struct({
  session_id: SessionId,
  tasks: Schema.Record({ key: Schema.String, value: Task }),
  task_ids: Schema.Array(Schema.String),
  messages: Schema.Array(Schema.Unknown),
  variables: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  updated_at: Schema.String
})
export type SessionState = typeof SessionState.Type

/** Where session state lives between activations of its `AgentSession`. */
export class SessionStore extends Context.Tag("@altan/agent/SessionStore")<SessionStore, {
  readonly load: (tenantId: TenantId, sessionId: SessionId) => Effect.Effect<Option.Option<SessionState>>
  readonly save: (tenantId: TenantId, state: SessionState) => Effect.Effect<void>
}>() {}

const key = (tenantId: TenantId, sessionId: string) => `${tenantId}/${sessionId}`

/**
 * In-process storage: the embedded default and unit tests. The agent replaces state objects rather
 * than mutating them, so holding the reference is as good as a copy.
 */
export const layerMemory: Layer.Layer<SessionStore> = Layer.sync(SessionStore, () => {
  const sessions = new Map<string, SessionState>()
  return {
    load: (tenantId, sessionId) => Effect.sync(() => Option.fromNullable(sessions.get(key(tenantId, sessionId)))),
    save: (tenantId, state) => Effect.sync(() => void sessions.set(key(tenantId, state.session_id), state))
  }
})
