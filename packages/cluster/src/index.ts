export * as Runtime from "./Runtime.js"
export * as RuntimeConfig from "./RuntimeConfig.js"
