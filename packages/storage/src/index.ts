export * as MemoryMessageStorage from "./MemoryMessageStorage.js"
export * as MessageRetention from "./MessageRetention.js"
