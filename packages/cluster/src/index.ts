export * as Logging from "./Logging.js"
export * as Runtime from "./Runtime.js"
export * as RuntimeConfig from "./RuntimeConfig.js"
