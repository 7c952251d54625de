import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import { LoggingLive } from "./Logging.js"
import { RuntimeLive } from "./Runtime.js"

RuntimeLive.pipe(Layer.provide(LoggingLive), Layer.launch, NodeRuntime.runMain({ disableErrorReporting: false }))
