export * as AgentConfig from "./AgentConfig.js"
export { AgentSessionLive } from "./AgentSession.js"
export * as TaskStore from "./TaskStore.js"
