export * as Logging from "./Logging.js"
export * as OperatorServer from "./OperatorServer.js"
export * as Telemetry from "./Telemetry.js"
export * as TelemetryConfig from "./TelemetryConfig.js"
