import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { TextTemplate } from "../src/builtin/Text.js"
import { call, decodeFailure, failure } from "./helpers.js"

const variables = {
  name: "Ada",
  order: { id: 17, total: 99.5, paid: true, items: [{ title: "Lamp" }, { title: "Desk" }], tags: ["a", "b"] },
  nothing: null,
  empty: ""
}

const render = (template: string, extra: Record<string, unknown> = {}) =>
  Effect.map(call(TextTemplate, { template, variables, ...extra }), (out) => out.text as string)

describe("text.template", () => {
  it.effect("renders top-level and nested placeholders with optional whitespace", () =>
    Effect.gen(function*() {
      expect(yield* render("Hello {{name}}, order #{{ order.id }} of {{order.total}}€ (paid: {{  order.paid }})"))
        .toBe("Hello Ada, order #17 of 99.5€ (paid: true)")
      expect(yield* render("First: {{order.items.0.title}}, second: {{ order.items[1].title }}"))
        .toBe("First: Lamp, second: Desk")
      expect(yield* render("{{name}}{{name}}")).toBe("AdaAda")
      expect(yield* render("no placeholders")).toEqual("no placeholders")
    }))

  it.effect("renders non-string values as JSON", () =>
    Effect.gen(function*() {
      expect(yield* render("{{order.tags}} {{order.items.0}} {{nothing}} [{{empty}}]"))
        .toBe("[\"a\",\"b\"] {\"title\":\"Lamp\"} null []")
    }))

  it.effect("keeps escaped and empty braces literal", () =>
    Effect.gen(function*() {
      expect(yield* render("\\{{name}} is {{name}}; {{ }} stays")).toBe("{{name}} is Ada; {{ }} stays")
    }))

  it.effect("fails in strict mode (the default) naming the unknown variables", () =>
    Effect.gen(function*() {
      const error = yield* failure(TextTemplate, {
        template: "Hi {{ customer.name }}, {{name}} {{order.items.5.title}} {{ customer.name }}",
        variables
      })
      expect(error._tag).toBe("ToolFailed")
      expect(error).toMatchObject({ tool_id: "text.template", retryable: false })
      expect(error.message).toContain("unknown variables in template: customer.name, order.items.5.title")
      expect(error.message).toContain("variables given: name, order, nothing, empty")

      const explicit = yield* failure(TextTemplate, { template: "{{x}}", variables: {}, strict: true })
      expect(explicit.message).toContain("unknown variable in template: x (variables given: none)")
    }))

  it.effect("renders unknown variables empty when not strict", () =>
    Effect.gen(function*() {
      expect(yield* render("Hi {{ customer.name }}!{{name}}", { strict: false })).toBe("Hi !Ada")
    }))

  it.effect("reads own properties only", () =>
    Effect.gen(function*() {
      const error = yield* failure(TextTemplate, {
        template: "{{constructor}} {{name.length}} {{order.toString}} {{__proto__}}",
        variables
      })
      expect(error.message).toContain("constructor, name.length, order.toString, __proto__")
      expect(yield* render("[{{constructor.name}}]", { strict: false })).toBe("[]")
    }))

  it.effect("rejects wrong types, missing and extra fields at decode", () =>
    Effect.gen(function*() {
      const wrongType = yield* decodeFailure(TextTemplate, { template: 1, variables: {} })
      expect(wrongType._tag).toBe("ToolInputInvalid")
      expect(wrongType.details?.field).toBe("template")
      // in the API's words, not the schema library's
      expect(wrongType.message).toBe("invalid input for text.template: template: must be a string (got 1)")

      const notObject = yield* decodeFailure(TextTemplate, { template: "x", variables: [1] })
      expect(notObject.details?.field).toBe("variables")

      const badStrict = yield* decodeFailure(TextTemplate, { template: "x", variables: {}, strict: "no" })
      expect(badStrict.details?.field).toBe("strict")

      const extra = yield* decodeFailure(TextTemplate, { template: "x", variables: {}, vars: {} })
      expect(extra.details?.field).toBe("vars")
    }))

  it("advertises a JSON Schema", () => {
    expect(TextTemplate.spec.tool_id).toBe("text.template")
    expect(TextTemplate.spec.input_schema).toMatchObject({
      type: "object",
      required: ["template", "variables"],
      properties: { template: { type: "string" }, variables: { type: "object" }, strict: { type: "boolean" } },
      additionalProperties: false
    })
  })
})
