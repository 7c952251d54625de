import { Api } from "@altan/domain/Api"
import * as HttpApi from "@effect/platform/HttpApi"

/** Routes served beside the HTTP API (RPC, operations, docs, console). */
const extra: ReadonlyArray<readonly [method: string, path: string]> = [
  ["POST", "/rpc"],
  ["GET", "/rpc/ws"],
  ["GET", "/healthz"],
  ["GET", "/readyz"],
  ["GET", "/openapi.json"],
  ["GET", "/docs"],
  ["GET", "/console"],
  ["GET", "/console/console.js"],
  ["GET", "/console/console.css"],
  ["POST", "/mcp"],
  ["GET", "/mcp"],
  ["DELETE", "/mcp"],
  ["GET", "/.well-known/oauth-protected-resource"],
  ["GET", "/.well-known/oauth-protected-resource/mcp"]
]

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** `/v1/tasks/:task_id` as a pattern: a parameter is one path segment. */
const patternOf = (path: string) =>
  new RegExp(`^${path.split("/").map((seg) => (seg.startsWith(":") ? "[^/]+" : escape(seg))).join("/")}/?$`)

const routes: Array<{ readonly method: string; readonly pattern: RegExp }> = extra.map(([method, path]) => ({
  method,
  pattern: patternOf(path)
}))
HttpApi.reflect(Api, {
  onGroup: () => undefined,
  onEndpoint: ({ endpoint }) => void routes.push({ method: endpoint.method, pattern: patternOf(endpoint.path) })
})

/** The methods some route serves at `path` (none: no route has that path). */
export const allowedMethods = (path: string): ReadonlyArray<string> =>
  [
    ...new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method))
  ].sort()
