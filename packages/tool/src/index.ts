export * as PureTools from "./PureTools.js"
export * as Tool from "./Tool.js"
export * as ToolRegistry from "./ToolRegistry.js"
export { ToolWorkerLive } from "./ToolWorker.js"
