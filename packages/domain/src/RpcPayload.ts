import * as Schema from "effect/Schema"

/**
 * An entity message's payload as a plain struct schema, without the `make` constructor `Schema.Struct` has.
 *
 * `@effect/rpc` checks a payload with the schema's `make` on every client call when it has one. That check
 * derives the struct's type AST anew each call; when a field is a transformation (the credential's
 * `Redacted`), the new AST misses the parser cache and the parser is rebuilt every time: about 75 µs of a
 * 550 µs tool call in `bench/tool-call`. Payloads are built by typed code, and they are decoded whenever they
 * cross a wire.
 */
export const payload = <Fields extends Schema.Struct.Fields>(
  fields: Fields
): Schema.Schema<Schema.Struct.Type<Fields>, Schema.Struct.Encoded<Fields>, Schema.Struct.Context<Fields>> =>
  Schema.make(Schema.Struct(fields).ast)
