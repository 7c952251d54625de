import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import {
  answeredHttp,
  baseUrlOf,
  colonDetail,
  decodeVendor,
  errorField,
  optional,
  PathSegment,
  segment,
  vendorCall
} from "./Vendor.js"

const PROVIDER = "microsoft"
const GRAPH_HOST = "graph.microsoft.com"

/** `InvalidAuthenticationToken: Access token is empty.` out of Graph's `{"error": {"code", "message"}}` body. */
const graphError = (body: unknown): string | undefined => {
  const error = errorField(body)
  if (error === undefined) return undefined
  const code = typeof error.code === "string" ? error.code : undefined
  const message = typeof error.message === "string" ? error.message : undefined
  return code !== undefined && message !== undefined ? `${code}: ${message}` : code ?? message
}

const graph = (toolId: string, ctx: Tool.ToolContext, path: string, json: unknown) =>
  vendorCall({
    toolId,
    provider: PROVIDER,
    ctx,
    url: `${baseUrlOf(ctx, PROVIDER, `https://${GRAPH_HOST}`)}/v1.0${path}`,
    method: "POST",
    json,
    onError: answeredHttp("Microsoft Graph", colonDetail(graphError))
  })

const Id = (description: string) => PathSegment.annotations({ description })

// ---------------------------------------------------------------------------------------------------------------
// Teams

export const PostChannelMessageInput = Schema.Struct({
  teamId: Id("The team's id (a GUID)."),
  channelId: Id("The channel's id, e.g. \"19:abc…@thread.tacv2\"."),
  content: Schema.NonEmptyString.annotations({ description: "The message text (or HTML when contentType is html)." }),
  contentType: optional(Schema.Literal("text", "html").annotations({ description: "Default text." }))
})

const ChatMessage = Schema.Struct({
  id: Schema.String,
  webUrl: optional(Schema.NullOr(Schema.String)),
  createdDateTime: optional(Schema.NullOr(Schema.String))
})

/** `teams.post_channel_message`: posts a message to a Teams channel (POST teams/{id}/channels/{id}/messages). */
export const TeamsPostChannelMessage: Tool.Tool = Tool.make({
  id: "teams.post_channel_message",
  name: "Post a Microsoft Teams channel message",
  description: "Posts a new message to a channel of a Microsoft Teams team, as the tenant's connected Microsoft " +
    "account. `content` is plain text, or HTML when contentType is \"html\". Returns {id, webUrl, createdDateTime}.",
  provider: PROVIDER,
  needsConnection: true,
  input: PostChannelMessageInput,
  output: ChatMessage,
  sideEffect: true,
  hosts: [GRAPH_HOST],
  run: (input, ctx) => {
    const id = "teams.post_channel_message"
    const path = `/teams/${segment(input.teamId)}/channels/${segment(input.channelId)}/messages`
    return graph(id, ctx, path, { body: { contentType: input.contentType ?? "text", content: input.content } }).pipe(
      Effect.flatMap(decodeVendor(id, ChatMessage))
    )
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Outlook

const GraphDateTime = Schema.Struct({
  dateTime: Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/, {
    message: () => "must be a local date-time without offset, like 2025-03-01T09:00:00"
  })),
  timeZone: Schema.NonEmptyTrimmedString.annotations({ description: "e.g. \"UTC\", \"Europe/Paris\"." })
}).annotations({ description: "{dateTime: local time without offset, timeZone: the zone it is in}." })

export const CreateOutlookEventInput = Schema.Struct({
  subject: Schema.String.pipe(Schema.maxLength(255)).annotations({ description: "The event title." }),
  body: optional(
    Schema.Struct({
      contentType: Schema.Literal("text", "html"),
      content: Schema.String
    }).annotations({ description: "The event description." })
  ),
  start: GraphDateTime,
  end: GraphDateTime,
  location: optional(Schema.String.annotations({ description: "The location's display name." })),
  attendees: optional(Schema.Array(Schema.Struct({
    email: Schema.String.pipe(Schema.pattern(/^[^\s@<>,;:"()\\[\]]+@[^\s@<>,;:"()\\[\]]+$/, {
      message: () => "must be a plain email address like bob@example.com"
    })),
    name: optional(Schema.String),
    type: optional(Schema.Literal("required", "optional").annotations({ description: "Default required." }))
  })))
})

const GraphEvent = Schema.Struct({
  id: Schema.String,
  webLink: optional(Schema.NullOr(Schema.String)),
  subject: optional(Schema.NullOr(Schema.String)),
  start: optional(Schema.NullOr(Schema.Struct({ dateTime: Schema.String, timeZone: Schema.String }))),
  end: optional(Schema.NullOr(Schema.Struct({ dateTime: Schema.String, timeZone: Schema.String })))
})

/** `outlook.create_event`: creates an event in the connected user's Outlook calendar (POST me/events). */
export const OutlookCreateEvent: Tool.Tool = Tool.make({
  id: "outlook.create_event",
  name: "Create an Outlook calendar event",
  description: "Creates an event in the default Outlook calendar of the tenant's connected Microsoft account; " +
    "attendees receive invitations. `start`/`end` are {dateTime: \"2025-03-01T09:00:00\" (no offset), timeZone: " +
    "\"Europe/Paris\"}. attendees are [{email, name?, type?: required|optional}]. Returns {id, webLink, subject, " +
    "start, end}.",
  provider: PROVIDER,
  needsConnection: true,
  input: CreateOutlookEventInput,
  output: GraphEvent,
  sideEffect: true,
  idempotencyKey: true,
  hosts: [GRAPH_HOST],
  run: (input, ctx) => {
    const id = "outlook.create_event"
    const event = {
      // Graph's duplicate guard for event creation: the same transactionId is not created twice
      ...(ctx.idempotencyKey !== undefined ? { transactionId: ctx.idempotencyKey } : {}),
      subject: input.subject,
      ...(input.body !== undefined ? { body: input.body } : {}),
      start: input.start,
      end: input.end,
      ...(input.location !== undefined ? { location: { displayName: input.location } } : {}),
      ...(input.attendees !== undefined
        ? {
          attendees: input.attendees.map((a) => ({
            emailAddress: { address: a.email, ...(a.name !== undefined ? { name: a.name } : {}) },
            type: a.type ?? "required"
          }))
        }
        : {})
    }
    return graph(id, ctx, "/me/events", event).pipe(Effect.flatMap(decodeVendor(id, GraphEvent)))
  }
})

/** Microsoft Graph tools (Teams, Outlook); they use the tenant's `microsoft` credential. */
export const tools: ReadonlyArray<Tool.Tool> = [TeamsPostChannelMessage, OutlookCreateEvent]
