import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { JsonExtract } from "../src/builtin/Json.js"
import { call, decodeFailure, failure } from "./helpers.js"

const doc = {
  order: {
    id: "o-1",
    total: 42.5,
    paid: false,
    note: null,
    items: [{ sku: "a", qty: 1 }, { sku: "b", qty: 2 }],
    "weird.key": { "with space": "yes" }
  },
  tags: ["x", "y", "z"]
}

const extract = (json: unknown, path: string, extra: Record<string, unknown> = {}) =>
  call(JsonExtract, { json, path, ...extra })

describe("json.extract", () => {
  it.effect("reads nested paths through objects and arrays", () =>
    Effect.gen(function*() {
      expect(yield* extract(doc, "order.id")).toEqual({ value: "o-1", found: true })
      expect(yield* extract(doc, "order.items[1].qty")).toEqual({ value: 2, found: true })
      expect(yield* extract(doc, "$.order.items[0]")).toEqual({ value: { sku: "a", qty: 1 }, found: true })
      expect(yield* extract(doc, "order.items.1.sku")).toEqual({ value: "b", found: true })
      expect(yield* extract(doc, "tags[-1]")).toEqual({ value: "z", found: true })
      expect(yield* extract(doc, "order[\"weird.key\"]['with space']")).toEqual({ value: "yes", found: true })
      expect(yield* extract(doc, "order.paid")).toEqual({ value: false, found: true })
      expect(yield* extract(doc, "order.note")).toEqual({ value: null, found: true })
      expect(yield* extract([10, [20, 30]], "[1][0]")).toEqual({ value: 20, found: true })
    }))

  it.effect("returns the whole document for $ and the empty path", () =>
    Effect.gen(function*() {
      expect(yield* extract(doc, "$")).toEqual({ value: doc, found: true })
      expect(yield* extract(doc, "")).toEqual({ value: doc, found: true })
      expect(yield* extract(7, "$")).toEqual({ value: 7, found: true })
    }))

  it.effect("parses a string containing JSON", () =>
    Effect.gen(function*() {
      expect(yield* extract(JSON.stringify(doc), "order.items[0].sku")).toEqual({ value: "a", found: true })
      expect(yield* extract("[1, 2, 3]", "[2]")).toEqual({ value: 3, found: true })
      expect(yield* extract("\"text\"", "$")).toEqual({ value: "text", found: true })
    }))

  it.effect("fails with a message saying where a missing path stopped", () =>
    Effect.gen(function*() {
      const outOfRange = yield* failure(JsonExtract, { json: { a: { b: [1, 2] } }, path: "a.b[3]" })
      expect(outOfRange._tag).toBe("ToolFailed")
      expect(outOfRange.message).toBe("path a.b[3] not found (a.b has 2 items)")
      expect(outOfRange).toMatchObject({ tool_id: "json.extract", retryable: false })

      const noKey = yield* failure(JsonExtract, { json: doc, path: "order.customer.name" })
      expect(noKey.message).toBe(
        "path order.customer.name not found (order has no key \"customer\"; keys: \"id\", \"total\", \"paid\", " +
          "\"note\", \"items\", \"weird.key\")"
      )

      const throughScalar = yield* failure(JsonExtract, { json: doc, path: "order.id.length" })
      expect(throughScalar.message).toBe(
        "path order.id.length not found (order.id is a string, not an object or array)"
      )

      const keyOnArray = yield* failure(JsonExtract, { json: doc, path: "tags.first" })
      expect(keyOnArray.message).toContain("tags is an array of 3 items; use an index like tags[0]")

      const atRoot = yield* failure(JsonExtract, { json: {}, path: "x" })
      expect(atRoot.message).toBe("path x not found (the root has no key \"x\"; it is empty)")
    }))

  it.effect("returns default instead of failing when the path is missing", () =>
    Effect.gen(function*() {
      expect(yield* extract(doc, "order.items[9].sku", { default: "none" })).toEqual({ value: "none", found: false })
      expect(yield* extract(doc, "nope", { default: null })).toEqual({ value: null, found: false })
      expect(yield* extract(doc, "order.id", { default: "none" })).toEqual({ value: "o-1", found: true })
    }))

  it.effect("reads own properties only", () =>
    Effect.gen(function*() {
      const proto = yield* failure(JsonExtract, { json: { a: {} }, path: "a.__proto__" })
      expect(proto.message).toContain("a has no key \"__proto__\"")
      const ctor = yield* failure(JsonExtract, { json: { a: {} }, path: "a.constructor.name" })
      expect(ctor.message).toContain("a has no key \"constructor\"")
      const length = yield* failure(JsonExtract, { json: { s: [1] }, path: "s.length" })
      expect(length.message).toContain("s is an array")
      // JSON.parse makes "__proto__" an own data property, which is then a plain key.
      expect(yield* extract("{\"__proto__\": {\"x\": 1}}", "__proto__.x")).toEqual({ value: 1, found: true })
    }))

  it.effect("fails on invalid JSON text and invalid paths", () =>
    Effect.gen(function*() {
      const badJson = yield* failure(JsonExtract, { json: "{\"a\": 1,}", path: "a" })
      expect(badJson._tag).toBe("ToolFailed")
      expect(badJson.message).toMatch(/^json is a string but not valid JSON: .+/)

      const badPath = yield* failure(JsonExtract, { json: doc, path: "order..id" })
      expect(badPath.message).toContain("invalid path \"order..id\": expected a key at position 6")

      const badIndex = yield* failure(JsonExtract, { json: doc, path: "tags[x]" })
      expect(badIndex.message).toContain("expected an index like [0]")
    }))

  it.effect("rejects wrong types, missing and extra fields at decode", () =>
    Effect.gen(function*() {
      const wrongType = yield* decodeFailure(JsonExtract, { json: {}, path: 3 })
      expect(wrongType._tag).toBe("ToolInputInvalid")
      expect(wrongType.details?.field).toBe("path")

      const missing = yield* decodeFailure(JsonExtract, { path: "a" })
      expect(missing.details?.field).toBe("json")

      const extra = yield* decodeFailure(JsonExtract, { json: {}, path: "a", fallback: 1 })
      expect(extra.details?.field).toBe("fallback")
    }))

  it("advertises a JSON Schema", () => {
    expect(JsonExtract.spec.tool_id).toBe("json.extract")
    const schema = JsonExtract.spec.input_schema as {
      properties: Record<string, unknown>
      required: Array<string>
    }
    expect(schema).toMatchObject({ type: "object", additionalProperties: false })
    expect(Object.keys(schema.properties).sort()).toEqual(["default", "json", "path"])
    expect(schema.required.sort()).toEqual(["json", "path"])
  })
})
