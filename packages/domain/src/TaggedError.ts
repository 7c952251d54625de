import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/** The class `TaggedError` makes: the library's, with `is`. */
export type TaggedErrorClass<Self, Tag extends string, Fields extends Schema.Struct.Fields> =
  & Schema.TaggedErrorClass<Self, Tag, { readonly _tag: Schema.tag<Tag> } & Fields>
  & { readonly is: (u: unknown) => u is Self }

/**
 * `Schema.TaggedError` with a `static is` that tests the tag, in the manner of `@effect/cluster`'s `ClusterError`:
 * the tag alone, so an error decoded from the wire is recognised like one made here.
 */
export const TaggedError = <Self>() =>
<Tag extends string, Fields extends Schema.Struct.Fields>(
  tag: Tag,
  fields: Fields
): TaggedErrorClass<Self, Tag, Fields> =>
  // the library's return type is conditional on `Self`, which stays open here: the class it makes is this one
  Object.assign(Schema.TaggedError<Self>()(tag, fields), {
    is: (u: unknown): u is Self => Predicate.isTagged(u, tag)
  }) as unknown as TaggedErrorClass<Self, Tag, Fields>
