import * as Either from "effect/Either"
import { InvalidRequest } from "./Errors.js"
import type { Plan, PlanStep } from "./Task.js"
import type { JsonSchema, ToolSpec } from "./ToolDefinition.js"

/** A `{"$ref": "<step>.output.<path>"}` found in a step's input. */
export interface Ref {
  readonly step: string
  readonly path: ReadonlyArray<string>
  /** Where the reference stands, e.g. `input.steps.1.input.summary`. */
  readonly field: string
}

/** A validated plan: steps with their dependencies (explicit and implied by references). */
export interface PlanGraph {
  readonly steps: ReadonlyArray<PlanStep>
  readonly deps: ReadonlyMap<string, ReadonlyArray<string>>
  readonly refs: ReadonlyMap<string, ReadonlyArray<Ref>>
}

const invalid = (message: string, field: string, extra?: Record<string, unknown>) =>
  new InvalidRequest({ code: "invalid_plan", message, details: { field, ...extra } })

export const isRef = (value: unknown): value is { readonly $ref: string } =>
  typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 1 &&
  typeof (value as { $ref?: unknown }).$ref === "string"

const refPattern = /^([A-Za-z0-9_-]{1,64})\.output((?:\.[^.]+)*)$/

const collectRefs = (value: unknown, field: string, out: Array<{ raw: string; field: string }>): void => {
  if (isRef(value)) out.push({ raw: value.$ref, field })
  else if (Array.isArray(value)) value.forEach((v, i) => collectRefs(v, `${field}.${i}`, out))
  else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) collectRefs(v, `${field}.${k}`, out)
  }
}

/** Whether a step's input refers to another step's output anywhere (then it is known only when that step ran). */
export const hasRefs = (value: unknown): boolean => {
  const found: Array<{ raw: string; field: string }> = []
  collectRefs(value, "", found)
  return found.length > 0
}

/** Finds a cycle among `deps`, as the list of step ids that form it. */
const findCycle = (ids: ReadonlyArray<string>, deps: ReadonlyMap<string, ReadonlyArray<string>>) => {
  const state = new Map<string, "visiting" | "done">()
  const stack: Array<string> = []
  const visit = (id: string): ReadonlyArray<string> | undefined => {
    if (state.get(id) === "done") return undefined
    if (state.get(id) === "visiting") return [...stack.slice(stack.indexOf(id)), id]
    state.set(id, "visiting")
    stack.push(id)
    for (const d of deps.get(id) ?? []) {
      const cycle = visit(d)
      if (cycle) return cycle
    }
    stack.pop()
    state.set(id, "done")
    return undefined
  }
  for (const id of ids) {
    const cycle = visit(id)
    if (cycle) return cycle
  }
  return undefined
}

/**
 * Checks a plan's structure before anything runs: unique step ids, known dependencies, well-formed
 * references to other steps, no cycles. Errors name the offending field.
 */
export const validate = (plan: Plan): Either.Either<PlanGraph, InvalidRequest> => {
  const ids = new Set<string>()
  for (const [i, step] of plan.steps.entries()) {
    if (ids.has(step.id)) return Either.left(invalid(`duplicate step id "${step.id}"`, `input.steps.${i}.id`))
    ids.add(step.id)
  }
  const deps = new Map<string, Array<string>>()
  const refs = new Map<string, Array<Ref>>()
  for (const [i, step] of plan.steps.entries()) {
    const own = new Set<string>()
    for (const [j, d] of (step.depends_on ?? []).entries()) {
      const field = `input.steps.${i}.depends_on.${j}`
      if (!ids.has(d)) return Either.left(invalid(`step "${step.id}" depends on unknown step "${d}"`, field))
      if (d === step.id) return Either.left(invalid(`step "${step.id}" depends on itself`, field))
      own.add(d)
    }
    const found: Array<{ raw: string; field: string }> = []
    collectRefs(step.input, `input.steps.${i}.input`, found)
    const stepRefs: Array<Ref> = []
    for (const { field, raw } of found) {
      const m = refPattern.exec(raw)
      if (!m) {
        return Either.left(invalid(`malformed $ref "${raw}": expected "<step id>.output.<path>"`, field))
      }
      const target = m[1]!
      if (!ids.has(target)) return Either.left(invalid(`$ref "${raw}" names unknown step "${target}"`, field))
      if (target === step.id) return Either.left(invalid(`$ref "${raw}" refers to its own step`, field))
      own.add(target)
      stepRefs.push({ step: target, path: m[2] ? m[2].slice(1).split(".") : [], field })
    }
    deps.set(step.id, [...own])
    refs.set(step.id, stepRefs)
  }
  const cycle = findCycle(plan.steps.map((s) => s.id), deps)
  if (cycle) {
    return Either.left(invalid(`steps form a cycle: ${cycle.join(" -> ")}`, "input.steps", { cycle }))
  }
  return Either.right({ steps: plan.steps, deps, refs })
}

/** The sub-schema at `segment` of an object or array JSON Schema; `undefined` when it cannot exist. */
const child = (root: JsonSchema, schema: JsonSchema, segment: string): JsonSchema | "open" | undefined => {
  const s = typeof schema.$ref === "string" && schema.$ref.startsWith("#/$defs/")
    ? ((root.$defs as Record<string, JsonSchema> | undefined)?.[schema.$ref.slice(8)] ?? {})
    : schema
  const variants = (s.anyOf ?? s.oneOf) as ReadonlyArray<JsonSchema> | undefined
  if (variants) {
    const found = variants.map((v) => child(root, v, segment)).filter((c) => c !== undefined)
    return found.find((c) => c !== "open") ?? found[0]
  }
  const props = s.properties as Record<string, JsonSchema> | undefined
  if (props && segment in props) return props[segment]
  if (s.type === "array" || s.items !== undefined) {
    if (!/^\d+$/.test(segment)) return undefined
    return (typeof s.items === "object" ? s.items as JsonSchema : "open")
  }
  if (s.additionalProperties === false || (props && s.type === "object" && s.additionalProperties === undefined)) {
    return props ? undefined : "open"
  }
  if (typeof s.additionalProperties === "object") return s.additionalProperties as JsonSchema
  if (s.type === "string" || s.type === "number" || s.type === "integer" || s.type === "boolean") return undefined
  return "open"
}

/**
 * Checks every reference's path against the referenced tool's output schema, where the tool
 * advertises one, so a typo fails the task before any tool runs.
 */
export const checkRefPaths = (
  graph: PlanGraph,
  specs: ReadonlyMap<string, ToolSpec>
): Either.Either<void, InvalidRequest> => {
  const toolOf = new Map(graph.steps.map((s) => [s.id, s.tool as string]))
  for (const refs of graph.refs.values()) {
    for (const ref of refs) {
      const tool = toolOf.get(ref.step)!
      const root = specs.get(tool)?.output_schema
      if (!root) continue
      let schema: JsonSchema = root
      for (const [i, segment] of ref.path.entries()) {
        const next = child(root, schema, segment)
        if (next === "open") break
        if (next === undefined) {
          const known = Object.keys((schema.properties as object | undefined) ?? {})
          const at = ["output", ...ref.path.slice(0, i)].join(".")
          return Either.left(invalid(
            `$ref "${ref.step}.output.${ref.path.join(".")}": ${tool} has no "${segment}" at ${at}` +
              (known.length > 0 ? ` (it has: ${known.join(", ")})` : ""),
            ref.field
          ))
        }
        schema = next
      }
    }
  }
  return Either.right(undefined)
}

/** A reference whose path is absent from the actual output. */
export class UnresolvedRef {
  readonly _tag = "UnresolvedRef"
  constructor(readonly ref: string, readonly reason: string) {}
}

const get = (value: unknown, path: ReadonlyArray<string>, raw: string): unknown => {
  let current = value
  for (const segment of path) {
    if (Array.isArray(current) && /^\d+$/.test(segment) && Number(segment) < current.length) {
      current = current[Number(segment)]
    } else if (
      typeof current === "object" && current !== null && !Array.isArray(current) &&
      Object.prototype.hasOwnProperty.call(current, segment)
    ) {
      current = (current as Record<string, unknown>)[segment]
    } else {
      throw new UnresolvedRef(raw, `"${segment}" is not in the output`)
    }
  }
  return current
}

/** Replaces every reference in `input` by the value it points to in the finished steps' outputs. */
export const resolve = (
  input: unknown,
  outputs: ReadonlyMap<string, unknown>
): Either.Either<unknown, UnresolvedRef> => {
  const walk = (value: unknown): unknown => {
    if (isRef(value)) {
      const m = refPattern.exec(value.$ref)!
      return get(outputs.get(m[1]!), m[2] ? m[2].slice(1).split(".") : [], value.$ref)
    }
    if (Array.isArray(value)) return value.map(walk)
    if (typeof value === "object" && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]))
    }
    return value
  }
  try {
    return Either.right(walk(input))
  } catch (e) {
    if (e instanceof UnresolvedRef) return Either.left(e)
    throw e
  }
}
