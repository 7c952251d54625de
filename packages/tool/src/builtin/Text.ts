import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { isRecord, messageOf, ownValue } from "./internal.js"

const TOOL_ID = "text.template"

export const TextTemplateInput = Schema.Struct({
  template: Schema.String.annotations({
    description: "Text with {{placeholders}}: {{name}}, {{ customer.address.city }}, {{items.0.title}}. " +
      "Write \\{{ to keep a literal {{."
  }),
  variables: Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({
    description: "The values placeholders refer to; nested objects and arrays are reached with dotted paths."
  }),
  strict: Schema.optionalWith(
    Schema.Boolean.annotations({
      description: "true (default): fail when a placeholder has no value; false: render it as an empty string."
    }),
    { exact: true }
  )
})
export type TextTemplateInput = typeof TextTemplateInput.Type

export const TextTemplateOutput = Schema.Struct({
  text: Schema.String.annotations({ description: "The rendered text." })
})
export type TextTemplateOutput = typeof TextTemplateOutput.Type

// An optional backslash (escape), then {{ name }}; names cannot contain braces.
const PLACEHOLDER = /(\\?)\{\{([^{}]*)\}\}/g

/** The value at a dotted path (`a.b.0.c`, `a.b[0].c`), own properties only. */
const lookup = (variables: Record<string, unknown>, name: string): { readonly value: unknown } | undefined => {
  const segments = name.replace(/\[(\d+)\]/g, ".$1").split(".").map((s) => s.trim())
  let current: unknown = variables
  for (const segment of segments) {
    if (segment === "") return undefined
    if (Array.isArray(current)) {
      if (!/^\d+$/.test(segment) || Number(segment) >= current.length) return undefined
      current = current[Number(segment)]
    } else if (isRecord(current)) {
      const found = ownValue(current, segment)
      if (found === undefined) return undefined
      current = found.value
    } else {
      return undefined
    }
  }
  return current === undefined ? undefined : { value: current }
}

const show = (value: unknown): string => typeof value === "string" ? value : JSON.stringify(value) ?? ""

/** Renders the template; `missing` lists the placeholders that had no value, in order, once each. */
export const render = (template: string, variables: Record<string, unknown>) => {
  const missing: Array<string> = []
  const text = template.replace(PLACEHOLDER, (whole, escape: string, inner: string) => {
    if (escape !== "") return whole.slice(1)
    const name = inner.trim()
    if (name === "") return whole
    const found = lookup(variables, name)
    if (found === undefined) {
      if (!missing.includes(name)) missing.push(name)
      return ""
    }
    return show(found.value)
  })
  return { text, missing }
}

/** `text.template`: fills `{{placeholders}}` in a text from a variables object. */
export const TextTemplate: Tool.Tool = Tool.make({
  id: TOOL_ID,
  name: "Render text template",
  description: "Fills {{placeholders}} in a text template from a `variables` object and returns { text }. " +
    "Placeholders may have spaces inside the braces and use dotted paths into nested objects and arrays " +
    "(\"{{ order.items.0.name }}\"). Strings are inserted as they are, numbers and booleans plainly, other " +
    "values (objects, arrays, null) as JSON. With strict (the default) a placeholder without a value fails " +
    "the call, naming it; with strict: false it renders as an empty string.",
  input: TextTemplateInput,
  output: TextTemplateOutput,
  run: (input) =>
    Effect.gen(function*() {
      const fail = (message: string) => new ToolFailed({ tool_id: TOOL_ID, message, retryable: false })
      const { missing, text } = yield* Effect.try({
        try: () => render(input.template, input.variables),
        catch: (error) => fail(`could not render the template: ${messageOf(error)}`)
      })
      if (missing.length > 0 && input.strict !== false) {
        const given = Object.keys(input.variables)
        return yield* Effect.fail(fail(
          `unknown variable${missing.length === 1 ? "" : "s"} in template: ${missing.join(", ")} ` +
            `(variables given: ${given.length === 0 ? "none" : given.slice(0, 30).join(", ")}${
              given.length > 30 ? ", …" : ""
            }); pass them in variables or set strict: false to render them empty`
        ))
      }
      return { text }
    })
})
