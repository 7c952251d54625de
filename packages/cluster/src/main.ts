import { LoggingLive } from "@altan/observability/Logging"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import { RuntimeLive } from "./Runtime.js"

// LoggingLive chooses the one logger (runMain's own pretty one would print every JSON line a second time)
RuntimeLive.pipe(
  Layer.provide(LoggingLive),
  Layer.launch,
  NodeRuntime.runMain({ disableErrorReporting: false, disablePrettyLogger: true })
)
