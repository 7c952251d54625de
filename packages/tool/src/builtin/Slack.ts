import type { EgressResponse } from "@altan/domain/Egress"
import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { isRecord } from "./internal.js"
import { answeredHttp, baseUrlOf, decodeVendor, parseJson, vendorExchange } from "./Vendor.js"

const PROVIDER = "slack"
const DEFAULT_BASE_URL = "https://slack.com/api"
/** The Slack Web API host. */
export const SLACK_HOSTS: ReadonlyArray<string> = ["slack.com"]

// Slack reports these with HTTP 200 and ok: false; only they say that trying again later may help.
const RETRYABLE_CODES = new Set(["ratelimited", "service_unavailable"])

// Hints for the codes an agent can act on; the code itself is always in the message.
const HINTS: Readonly<Record<string, string>> = {
  channel_not_found: "the channel does not exist or the Slack app cannot see it; pass a channel ID such as C0123456789",
  not_in_channel: "the Slack app is not a member of the channel; invite it first",
  is_archived: "the channel is archived",
  name_taken: "a channel with this name already exists",
  invalid_name_specials: "channel names may only contain lowercase letters, digits, hyphens and underscores",
  invalid_cursor: "the cursor is invalid or expired; start again without a cursor",
  invalid_auth: "the Slack connection is not valid; reconnect it",
  not_authed: "the Slack connection is not valid; reconnect it",
  token_revoked: "the Slack connection was revoked; reconnect it",
  account_inactive: "the Slack connection was revoked; reconnect it"
}

/** The Slack error code and its detail (`needed` scope, hint), for a body `{ ok: false, error }`. */
const describeError = (code: string, body: Record<string, unknown>): string => {
  const needed = typeof body["needed"] === "string" ? ` (needed scope: ${body["needed"]})` : ""
  const hint = HINTS[code] === undefined ? "" : `: ${HINTS[code]}`
  return `${code}${needed}${hint}`
}

const retryAfter = (response: EgressResponse): string => {
  const value = response.headers["retry-after"]
  return value !== undefined && /^\d+$/.test(value) ? `; retry after ${value} s` : ""
}

/** ` (<code>)` out of Slack's error body (`ratelimited` for a bare 429), then when to retry. */
const slackDetail = (response: EgressResponse): string => {
  const parsed = parseJson(response)
  const code = isRecord(parsed) && typeof parsed["error"] === "string"
    ? describeError(parsed["error"], parsed)
    : response.status === 429
    ? "ratelimited"
    : undefined
  return `${code === undefined ? "" : ` (${code})`}${retryAfter(response)}`
}

/**
 * One Web API method call: the credential as the header the integrator named, the answer checked both for
 * the HTTP status and for Slack's `ok: false` (which comes with HTTP 200).
 */
const callSlack = (
  toolId: string,
  ctx: Tool.ToolContext,
  method: string,
  request: { readonly query: Record<string, string | undefined> } | { readonly body: Record<string, unknown> }
): Effect.Effect<Record<string, unknown>, ToolFailed> =>
  Effect.gen(function*() {
    let url = `${baseUrlOf(ctx, PROVIDER, DEFAULT_BASE_URL)}/${method}`
    if ("query" in request) {
      const params = new URLSearchParams()
      for (const [key, value] of Object.entries(request.query)) if (value !== undefined) params.set(key, value)
      url = `${url}?${params.toString()}`
    }
    const { answer, response } = yield* vendorExchange({
      toolId,
      provider: PROVIDER,
      ctx,
      url,
      method: "query" in request ? "GET" : "POST",
      ...("body" in request ? { json: request.body } : {}),
      onError: answeredHttp("Slack", slackDetail)
    })
    if (!isRecord(answer)) {
      return yield* new ToolFailed({
        tool_id: toolId,
        message: `${toolId}: Slack answered with a body that is not a JSON object`,
        retryable: false,
        status: response.status
      })
    }
    if (answer["ok"] !== true) {
      const code = typeof answer["error"] === "string" ? answer["error"] : "unknown_error"
      return yield* new ToolFailed({
        tool_id: toolId,
        message: `${toolId}: Slack error ${describeError(code, answer)}`,
        retryable: RETRYABLE_CODES.has(code),
        status: response.status,
        body_excerpt: JSON.stringify({ ok: false, error: code })
      })
    }
    return answer
  })

/** Decodes the interesting part of a Slack answer; extra fields are dropped. */
const shape = <A, I>(toolId: string, schema: Schema.Schema<A, I>) =>
  decodeVendor(toolId, schema, "unexpected Slack answer")

const Channel = Schema.String.pipe(Schema.minLength(1)).annotations({
  description: "The channel ID (C…, G… or D…, preferred) or, for chat.postMessage only, a channel name like #general."
})

// ---------------------------------------------------------------------------------------------------------------
// slack.post_message

/** Input of `slack.post_message`. */
export const PostMessageInput = Schema.Struct({
  channel: Channel,
  text: Schema.String.pipe(Schema.minLength(1)).annotations({
    description: "The message in Slack mrkdwn (*bold*, _italic_, <https://url|label>, <@U0123> mentions); " +
      "with `blocks` it is the notification fallback text."
  }),
  thread_ts: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^\d+\.\d+$/)).annotations({
      description: "The `ts` of the parent message, to reply in its thread, e.g. \"1712345678.123456\"."
    }),
    { exact: true }
  ),
  blocks: Schema.optionalWith(
    Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown })).annotations({
      description: "Block Kit blocks, e.g. [{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\",\"text\":\"Hi\"}}]."
    }),
    { exact: true }
  )
})

/** Output of `slack.post_message`. */
export const PostMessageOutput = Schema.Struct({
  channel: Schema.String.annotations({ description: "The ID of the channel the message was posted to." }),
  ts: Schema.String.annotations({ description: "The message's timestamp: its ID within the channel." })
})

/** `slack.post_message`: chat.postMessage. */
export const PostMessage: Tool.Tool = Tool.make({
  id: "slack.post_message",
  name: "Post a Slack message",
  description: "Posts a message to a Slack channel, private channel or DM as the connected Slack app " +
    "(chat.postMessage), optionally as a reply in a thread (`thread_ts`). The app must be a member of the " +
    "channel. Returns { channel, ts }; `ts` identifies the message (use it as `thread_ts` to reply). Fails " +
    "with the Slack error code, e.g. channel_not_found, not_in_channel, is_archived.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: SLACK_HOSTS,
  input: PostMessageInput,
  output: PostMessageOutput,
  run: (input, ctx) =>
    callSlack("slack.post_message", ctx, "chat.postMessage", {
      body: {
        channel: input.channel,
        text: input.text,
        ...(input.thread_ts === undefined ? {} : { thread_ts: input.thread_ts }),
        ...(input.blocks === undefined ? {} : { blocks: input.blocks })
      }
    }).pipe(Effect.flatMap(shape("slack.post_message", PostMessageOutput)))
})

// ---------------------------------------------------------------------------------------------------------------
// slack.create_channel

/** Input of `slack.create_channel`. */
export const CreateChannelInput = Schema.Struct({
  name: Schema.String.pipe(Schema.pattern(/^[a-z0-9_-]{1,80}$/)).annotations({
    description: "The channel name without \"#\": lowercase letters, digits, hyphens and underscores, " +
      "at most 80 characters, e.g. \"proj-apollo\"."
  }),
  is_private: Schema.optionalWith(
    Schema.Boolean.annotations({ description: "true for a private channel; public by default." }),
    { exact: true }
  )
})

/** Output of `slack.create_channel`. */
export const CreateChannelOutput = Schema.Struct({
  channel: Schema.Struct({
    id: Schema.String.annotations({ description: "The new channel's ID, e.g. C0123456789." }),
    name: Schema.String,
    is_private: Schema.optionalWith(Schema.Boolean, { exact: true })
  })
})

/** `slack.create_channel`: conversations.create. */
export const CreateChannel: Tool.Tool = Tool.make({
  id: "slack.create_channel",
  name: "Create a Slack channel",
  description: "Creates a public (default) or private Slack channel (conversations.create); the connected " +
    "Slack app becomes its first member. Returns { channel: { id, name, is_private } }. Fails with " +
    "name_taken when the name is in use.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: SLACK_HOSTS,
  input: CreateChannelInput,
  output: CreateChannelOutput,
  run: (input, ctx) =>
    callSlack("slack.create_channel", ctx, "conversations.create", {
      body: { name: input.name, ...(input.is_private === undefined ? {} : { is_private: input.is_private }) }
    }).pipe(Effect.flatMap(shape("slack.create_channel", CreateChannelOutput)))
})

// ---------------------------------------------------------------------------------------------------------------
// slack.channel_history

/** Input of `slack.channel_history`. */
export const ChannelHistoryInput = Schema.Struct({
  channel: Channel,
  limit: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(1, 999)).annotations({
      description: "How many messages to return at most (1-999, default 100)."
    }),
    { exact: true }
  ),
  cursor: Schema.optionalWith(
    Schema.String.pipe(Schema.minLength(1)).annotations({
      description: "`next_cursor` of a previous call, to read the next (older) page."
    }),
    { exact: true }
  ),
  oldest: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^\d+(\.\d+)?$/)).annotations({
      description: "Only messages after this Unix timestamp (a message `ts`), e.g. \"1712345678.000000\"."
    }),
    { exact: true }
  ),
  latest: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^\d+(\.\d+)?$/)).annotations({
      description: "Only messages before this Unix timestamp (a message `ts`)."
    }),
    { exact: true }
  )
})

const Message = Schema.Struct({
  ts: Schema.String,
  user: Schema.optionalWith(Schema.String, { exact: true }),
  bot_id: Schema.optionalWith(Schema.String, { exact: true }),
  text: Schema.optionalWith(Schema.String, { exact: true, default: () => "" }),
  thread_ts: Schema.optionalWith(Schema.String, { exact: true }),
  reply_count: Schema.optionalWith(Schema.Number, { exact: true })
})

const HistoryAnswer = Schema.Struct({
  messages: Schema.Array(Message),
  has_more: Schema.optionalWith(Schema.Boolean, { exact: true, default: () => false }),
  response_metadata: Schema.optionalWith(
    Schema.Struct({ next_cursor: Schema.optionalWith(Schema.String, { exact: true }) }),
    { exact: true }
  )
})

/** Output of `slack.channel_history`. */
export const ChannelHistoryOutput = Schema.Struct({
  messages: Schema.Array(Schema.Struct({
    ts: Schema.String.annotations({ description: "The message's ID; pass it as `thread_ts` to reply." }),
    user: Schema.optionalWith(Schema.String, { exact: true }).annotations({ description: "The author's user ID." }),
    bot_id: Schema.optionalWith(Schema.String, { exact: true }),
    text: Schema.String,
    thread_ts: Schema.optionalWith(Schema.String, { exact: true }),
    reply_count: Schema.optionalWith(Schema.Number, { exact: true })
  })).annotations({ description: "Newest first." }),
  has_more: Schema.Boolean,
  next_cursor: Schema.optionalWith(Schema.String, { exact: true }).annotations({
    description: "Present when older messages remain: pass it as `cursor`."
  })
})

/** `slack.channel_history`: conversations.history. */
export const ChannelHistory: Tool.Tool = Tool.make({
  id: "slack.channel_history",
  name: "Read Slack channel history",
  description: "Reads the latest messages of a Slack channel, newest first (conversations.history), " +
    "optionally between `oldest` and `latest` timestamps. The Slack app must be a member of the channel. " +
    "Returns { messages: [{ ts, user, text, thread_ts, reply_count }], has_more, next_cursor }; pass " +
    "`next_cursor` as `cursor` to read older messages. Thread replies are not included.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: false,
  cacheable: true,
  hosts: SLACK_HOSTS,
  input: ChannelHistoryInput,
  output: ChannelHistoryOutput,
  run: (input, ctx) =>
    callSlack("slack.channel_history", ctx, "conversations.history", {
      query: {
        channel: input.channel,
        limit: String(input.limit ?? 100),
        cursor: input.cursor,
        oldest: input.oldest,
        latest: input.latest
      }
    }).pipe(
      Effect.flatMap(shape("slack.channel_history", HistoryAnswer)),
      Effect.map((answer) => {
        const next = answer.response_metadata?.next_cursor
        return {
          messages: answer.messages,
          has_more: answer.has_more,
          ...(next === undefined || next === "" ? {} : { next_cursor: next })
        }
      })
    )
})

/** The Slack tools. */
export const tools: ReadonlyArray<Tool.Tool> = [PostMessage, CreateChannel, ChannelHistory]
