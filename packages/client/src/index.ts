/**
 * Typed clients of the Altan API: the `HttpApiClient` of the public HTTP API (`makeClient`, `ApiClient`, `layer`),
 * the task RPCs (`makeRpcClient`), a task's events over server-sent events (`taskEvents`), and the schemas and wire
 * errors they speak.
 */
export { Api } from "@altan/domain/Api"
export { ApiClient, type Client, type ClientOptions, layer, makeClient } from "@altan/domain/Client"
export {
  ApiKeyConnection,
  AuthorizeResponse,
  ConnectionConfig,
  ConnectionInfo,
  OAuth2Connection
} from "@altan/domain/ConnectionConfig"
export {
  Conflict,
  ErrorBody,
  ErrorDetails,
  Forbidden,
  InvalidRequest,
  NotFound,
  PayloadTooLarge,
  TooManyRequests,
  Unauthorized,
  Unavailable,
  UpstreamFailed
} from "@altan/domain/Errors"
export { SessionId, TaskId, ToolId } from "@altan/domain/Ids"
export { LlmAuth, LlmConfig } from "@altan/domain/LlmConfig"
export {
  isTerminal,
  Plan,
  PlanStep,
  SessionInfo,
  Step,
  StepStatus,
  Task,
  TaskEvent,
  TaskEventType,
  TaskInput,
  TaskMode,
  TaskPage,
  TaskQuery,
  TaskRequest,
  TaskStatus,
  TaskSummary,
  WaitingFor
} from "@altan/domain/Task"
export {
  layerAuthorization,
  layerProtocol,
  makeRpcClient,
  type RpcClientOptions,
  type TaskRpcClient,
  TaskRpcs
} from "@altan/domain/TaskRpc"
export { ToolDefinition, ToolSpec } from "@altan/domain/ToolDefinition"
export { taskEvents, type TaskEventsOptions } from "./TaskEvents.js"
