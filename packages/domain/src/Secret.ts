import * as Schema from "effect/Schema"

/** A tenant secret's name, as LLM configs and connections refer to it. */
export const SecretName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, {
    message: () => "secret name must be 1-128 letters, digits, _ . or -"
  })
)
