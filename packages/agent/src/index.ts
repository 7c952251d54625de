export * as AgentConfig from "./AgentConfig.js"
export { AgentSessionLive } from "./AgentSession.js"
export * as Plan from "./Plan.js"
export * as SessionStore from "./SessionStore.js"
