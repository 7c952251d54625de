import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as PlanGraph from "../src/PlanGraph.js"
import { Plan } from "../src/Task.js"
import { ToolSpec } from "../src/ToolDefinition.js"

const plan = (steps: ReadonlyArray<Record<string, unknown>>) => Schema.decodeUnknownSync(Plan)({ steps })

const error = (result: Either.Either<unknown, { readonly message: string; readonly details?: unknown }>) => {
  if (Either.isRight(result)) throw new Error("expected the plan to be refused")
  return { message: result.left.message, details: result.left.details }
}

const spec = (tool_id: string, output_schema?: Record<string, unknown>): ToolSpec =>
  Schema.decodeUnknownSync(ToolSpec)({
    tool_id,
    name: tool_id,
    description: "",
    provider: "test",
    builtin: false,
    input_schema: { type: "object" },
    ...(output_schema ? { output_schema } : {}),
    side_effect: false,
    cacheable: false,
    idempotent: true
  })

describe("PlanGraph.validate", () => {
  it("derives dependencies from depends_on and from $refs, with where each reference stands", () => {
    const graph = PlanGraph.validate(plan([
      { id: "a", tool: "t.a" },
      { id: "b", tool: "t.b", depends_on: ["a"] },
      { id: "c", tool: "t.c", input: { x: { $ref: "a.output.items.0.id" }, list: [{ y: { $ref: "b.output" } }] } }
    ]))
    expect(Either.isRight(graph)).toBe(true)
    const { deps, refs } = Either.getOrThrow(graph)
    expect(deps.get("a")).toEqual([])
    expect(deps.get("b")).toEqual(["a"])
    expect([...deps.get("c")!].sort()).toEqual(["a", "b"])
    expect(refs.get("c")).toEqual([
      { step: "a", path: ["items", "0", "id"], field: "input.steps.2.input.x" },
      { step: "b", path: [], field: "input.steps.2.input.list.0.y" }
    ])
  })

  it("refuses duplicate ids, unknown or self dependencies, malformed and dangling $refs, naming the field", () => {
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t" }, { id: "a", tool: "t" }])))).toMatchObject({
      message: `duplicate step id "a"`,
      details: { field: "input.steps.1.id" }
    })
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t", depends_on: ["zz"] }])))).toMatchObject({
      message: `step "a" depends on unknown step "zz"`,
      details: { field: "input.steps.0.depends_on.0" }
    })
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t", depends_on: ["a"] }]))).message).toBe(
      `step "a" depends on itself`
    )
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t", input: { x: { $ref: "a.result" } } }])))).toMatchObject(
      {
        message: `malformed $ref "a.result": expected "<step id>.output.<path>"`,
        details: { field: "input.steps.0.input.x" }
      }
    )
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t", input: { x: { $ref: "b.output" } } }]))).message)
      .toBe(`$ref "b.output" names unknown step "b"`)
    expect(error(PlanGraph.validate(plan([{ id: "a", tool: "t", input: { x: { $ref: "a.output" } } }]))).message)
      .toBe(`$ref "a.output" refers to its own step`)
  })

  it("refuses a cycle, through depends_on and $refs alike, and lists it", () => {
    const refused = error(PlanGraph.validate(plan([
      { id: "a", tool: "t", depends_on: ["c"] },
      { id: "b", tool: "t", input: { v: { $ref: "a.output.v" } } },
      { id: "c", tool: "t", depends_on: ["b"] }
    ])))
    expect(refused.message).toBe("steps form a cycle: a -> c -> b -> a")
    expect(refused.details).toMatchObject({ field: "input.steps", cycle: ["a", "c", "b", "a"] })
  })

  it("an object with $ref beside other keys is data, not a reference", () => {
    const graph = Either.getOrThrow(PlanGraph.validate(plan([
      { id: "a", tool: "t", input: { x: { $ref: "nowhere", note: "literal" } } }
    ])))
    expect(graph.refs.get("a")).toEqual([])
  })
})

describe("PlanGraph.checkRefPaths", () => {
  const outputs = new Map([
    [
      "t.list",
      spec("t.list", {
        type: "object",
        properties: {
          items: { type: "array", items: { $ref: "#/$defs/Item" } },
          meta: { type: "object", additionalProperties: { type: "string" } },
          count: { type: "integer" }
        },
        $defs: { Item: { type: "object", properties: { id: { type: "string" } } } }
      })
    ],
    ["t.open", spec("t.open")]
  ])
  const check = (ref: string, tool = "t.list") =>
    PlanGraph.validate(plan([{ id: "a", tool }, { id: "b", tool: "t", input: { x: { $ref: ref } } }])).pipe(
      Either.flatMap((graph) => PlanGraph.checkRefPaths(graph, outputs))
    )

  it("accepts paths the output schema has: array items through $defs, additionalProperties", () => {
    expect(Either.isRight(check("a.output.items.3.id"))).toBe(true)
    expect(Either.isRight(check("a.output.meta.anything"))).toBe(true)
    expect(Either.isRight(check("a.output.whatever.deep", "t.open"))).toBe(true)
  })

  it("refuses a typo before anything runs, naming what the tool has", () => {
    expect(error(check("a.output.itemz")).message).toBe(
      `$ref "a.output.itemz": t.list has no "itemz" at output (it has: items, meta, count)`
    )
    expect(error(check("a.output.items.x")).message).toBe(`$ref "a.output.items.x": t.list has no "x" at output.items`)
    expect(error(check("a.output.count.n")).message).toContain(`has no "n" at output.count`)
    expect(error(check("a.output.items.0.name")).details).toMatchObject({ field: "input.steps.1.input.x" })
  })
})

describe("PlanGraph.resolve", () => {
  const outputs = new Map<string, unknown>([["a", { items: [{ id: "i1" }], n: 0 }], ["b", "text"]])

  it("replaces references, nested in objects and arrays, by the outputs' values", () => {
    expect(PlanGraph.resolve(
      { id: { $ref: "a.output.items.0.id" }, all: [{ $ref: "b.output" }, { $ref: "a.output.n" }], keep: 1 },
      outputs
    )).toEqual(Either.right({ id: "i1", all: ["text", 0], keep: 1 }))
  })

  it("a path absent from the actual output is an UnresolvedRef naming the segment", () => {
    const result = PlanGraph.resolve({ x: { $ref: "a.output.items.5.id" } }, outputs)
    expect(Either.isLeft(result) && result.left).toMatchObject({
      _tag: "UnresolvedRef",
      ref: "a.output.items.5.id",
      reason: `"5" is not in the output`
    })
    // inherited properties are not outputs
    expect(Either.isLeft(PlanGraph.resolve({ x: { $ref: "a.output.constructor" } }, outputs))).toBe(true)
  })
})
