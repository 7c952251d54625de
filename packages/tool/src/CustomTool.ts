import { InvalidRequest } from "@altan/domain/Errors"
import type { JsonSchema, ToolDefinition, ToolSpec } from "@altan/domain/ToolDefinition"
import { ToolInputInvalid } from "@altan/domain/ToolWorker"
import { Ajv, type ValidateFunction } from "ajv"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Redacted from "effect/Redacted"
import { isIP } from "node:net"
import { checkStatus, httpFailed, requireCredential, type Tool } from "./Tool.js"

const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false })

/** A compiled JSON Schema of a tool's input, or why it does not compile. */
export const compileInputSchema = (schema: JsonSchema): Either.Either<ValidateFunction, string> => {
  try {
    return Either.right(ajv.compile(schema))
  } catch (e) {
    return Either.left((e as Error).message)
  }
}

/** A tool's `decode` by its compiled input schema: the first offending field named, every issue listed. */
export const jsonSchemaDecoder = (id: string, validate: ValidateFunction) => (input: unknown) =>
  validate(input) ? Effect.succeed(input) : Effect.fail(
    new ToolInputInvalid({
      tool_id: id,
      message: `invalid input for ${id}: ${ajv.errorsText(validate.errors, { dataVar: "input" })}`,
      details: {
        field: (validate.errors?.[0]?.instancePath ?? "").replace(/^\//, "").replace(/\//g, ".") ||
          String(
            validate.errors?.[0]?.params && "missingProperty" in validate.errors[0].params
              ? validate.errors[0].params.missingProperty
              : ""
          ),
        issues: (validate.errors ?? []).map((e) => ({ path: e.instancePath, message: e.message }))
      }
    })
  )

const invalid = (message: string, field: string) =>
  new InvalidRequest({ code: "invalid_tool", message, details: { field } })

/** `{name}` placeholders of an endpoint. */
const placeholders = (endpoint: string) => [...endpoint.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]!)

/**
 * The provider a custom tool belongs to, for its credential and budget: the explicit `provider`,
 * else the name in the endpoint's host (`slack.com` -> `slack`, `eu12.my.salesforce.com` -> `salesforce`).
 */
export const providerOf = (definition: ToolDefinition): string => {
  if (definition.provider) return definition.provider
  const host = new URL(definition.endpoint.replace(/\{[^}]*\}/g, "x")).hostname
  if (isIP(host.replace(/^\[|\]$/g, "")) !== 0) return "custom"
  const labels = host.split(".")
  return (labels.length >= 2 ? labels[labels.length - 2] : labels[0])!.toLowerCase()
}

/** The seed's `parameters` list as a JSON Schema; a full JSON Schema object is taken as it is. */
export const inputSchemaOf = (definition: ToolDefinition): JsonSchema => {
  if (!Array.isArray(definition.parameters)) return definition.parameters as JsonSchema
  const list = definition.parameters as ReadonlyArray<{
    name: string
    type: string
    description?: string | undefined
    required: boolean
    enum?: ReadonlyArray<unknown> | undefined
  }>
  return {
    type: "object",
    properties: Object.fromEntries(list.map((p) => [p.name, {
      type: p.type,
      ...(p.description ? { description: p.description } : {}),
      ...(p.enum ? { enum: p.enum } : {})
    }])),
    required: list.filter((p) => p.required).map((p) => p.name),
    additionalProperties: false
  }
}

/**
 * Checks a tenant's tool definition beyond its shape (duplicate parameters, placeholders that name no
 * parameter, a schema ajv cannot compile) and builds the runnable tool. Errors name the field.
 */
export const fromDefinition = (
  definition: ToolDefinition,
  vendorHosts: ReadonlyArray<string>
): Either.Either<Tool, InvalidRequest> => {
  if (Array.isArray(definition.parameters)) {
    const seen = new Set<string>()
    for (const [i, p] of (definition.parameters as ReadonlyArray<{ name: string }>).entries()) {
      if (seen.has(p.name)) return Either.left(invalid(`duplicate parameter "${p.name}"`, `parameters.${i}.name`))
      seen.add(p.name)
    }
  }
  const schema = inputSchemaOf(definition)
  if (schema.type !== undefined && schema.type !== "object") {
    return Either.left(invalid("a tool's parameters must describe an object", "parameters"))
  }
  const declared = new Set(Object.keys((schema.properties as object | undefined) ?? {}))
  for (const name of placeholders(definition.endpoint)) {
    if (!declared.has(name)) {
      return Either.left(invalid(`the endpoint's {${name}} is not one of the parameters`, "endpoint"))
    }
  }
  let validate: ReturnType<typeof ajv.compile>
  try {
    validate = ajv.compile(schema)
  } catch (e) {
    return Either.left(invalid(`parameters is not a valid JSON Schema: ${(e as Error).message}`, "parameters"))
  }
  const id = definition.tool_id
  if (definition.fallback === id) return Either.left(invalid("a tool cannot be its own fallback", "fallback"))
  const provider = providerOf(definition)
  const method = definition.method
  const spec: ToolSpec = {
    tool_id: id,
    name: definition.name,
    description: definition.description,
    provider,
    builtin: false,
    input_schema: schema,
    side_effect: definition.side_effect ?? (method !== "GET"),
    // only reads without side effects are ever served from the cache
    cacheable: (definition.cacheable ?? false) && method === "GET" && definition.side_effect !== true,
    idempotent: definition.idempotent ?? (method === "GET" || method === "PUT" || method === "DELETE"),
    ...(definition.fallback ? { fallback: definition.fallback } : {}),
    ...(definition.timeout_ms ? { timeout_ms: definition.timeout_ms } : {}),
    ...(definition.max_attempts ? { max_attempts: definition.max_attempts } : {}),
    ...(definition.idempotency_header ? { idempotency_key: true } : {}),
    ...(definition.requires_approval ? { requires_approval: true } : {}),
    ...(definition.auth !== "none" ? { needs_connection: true } : {})
  }
  return Either.right({
    spec,
    hosts: vendorHosts,
    decode: jsonSchemaDecoder(id, validate),
    run: (input, ctx) =>
      Effect.gen(function*() {
        const args = { ...(input as Record<string, unknown>) }
        const url = new URL(definition.endpoint.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
          const value = args[name]
          delete args[name]
          return encodeURIComponent(String(value ?? ""))
        }))
        // the tenant's base URL for the provider (a region, a sandbox) takes the endpoint's place
        const base = ctx.baseUrl(provider)
        if (base) {
          const origin = new URL(base)
          url.protocol = origin.protocol
          url.host = origin.host
        }
        const headers: Record<string, string> = { accept: "application/json" }
        if (definition.auth !== "none") {
          const credential = yield* requireCredential(id, provider, ctx)
          headers[credential.header.toLowerCase()] = Redacted.value(credential.value)
        }
        if (definition.idempotency_header && ctx.idempotencyKey) {
          headers[definition.idempotency_header.toLowerCase()] = ctx.idempotencyKey
        }
        let body: string | undefined
        if (method === "GET" || method === "DELETE") {
          for (const [k, v] of Object.entries(args)) {
            url.searchParams.set(k, typeof v === "string" ? v : JSON.stringify(v))
          }
        } else {
          headers["content-type"] = "application/json"
          body = JSON.stringify(args)
        }
        const response = yield* ctx.http({
          url: url.href,
          method,
          headers,
          ...(body !== undefined ? { body } : {}),
          ...(definition.timeout_ms ? { timeoutMs: definition.timeout_ms } : {})
        }).pipe(Effect.mapError(httpFailed(id)))
        return yield* checkStatus(id, response)
      })
  })
}
