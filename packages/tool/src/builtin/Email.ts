import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import PostalMime, { decodeWords } from "postal-mime"
import type { Address, Email } from "postal-mime"
import * as Tool from "../Tool.js"
import { messageOf } from "./internal.js"

const TOOL_ID = "email.parse"
const MAX_RAW = 1_048_576

export const EmailParseInput = Schema.Struct({
  raw: Schema.String.pipe(Schema.maxLength(MAX_RAW)).annotations({
    description: "The complete raw message (RFC 5322): header lines, a blank line, then the body. At most 1 MiB."
  })
})
export type EmailParseInput = typeof EmailParseInput.Type

export const EmailParseOutput = Schema.Struct({
  from: Schema.String.annotations({ description: "Sender address, e.g. \"alice@example.com\"; \"\" if absent." }),
  from_name: Schema.optionalWith(
    Schema.String.annotations({ description: "Sender display name, when the From header has one." }),
    { exact: true }
  ),
  to: Schema.Array(Schema.String).annotations({ description: "Recipient addresses (groups flattened)." }),
  cc: Schema.Array(Schema.String).annotations({ description: "Cc addresses (groups flattened)." }),
  subject: Schema.String.annotations({ description: "Decoded subject; \"\" if absent." }),
  date: Schema.optionalWith(
    Schema.String.annotations({ description: "The Date header as ISO-8601 UTC; absent if missing or unparseable." }),
    { exact: true }
  ),
  message_id: Schema.optionalWith(
    Schema.String.annotations({ description: "The Message-ID header, angle brackets included." }),
    { exact: true }
  ),
  body: Schema.String.annotations({
    description: "The plain-text body; rendered from the HTML part when the message has no text part."
  }),
  headers: Schema.Record({ key: Schema.String, value: Schema.String }).annotations({
    description: "Every header by lower-cased name, unfolded and decoded; the last occurrence wins."
  })
})
export type EmailParseOutput = typeof EmailParseOutput.Type

const fail = (message: string) => new ToolFailed({ tool_id: TOOL_ID, message, retryable: false })

// RFC 5322 field names: printable ASCII except the colon. postal-mime turns a colon-less line
// (e.g. plain prose) into a "header" named after the whole line; those are not headers.
const FIELD_NAME = /^[!-9;-~]+$/

const headerValue = (line: string): string => {
  const colon = line.indexOf(":")
  // Unfolding per RFC 5322 keeps the folding whitespace; collapse it to one space for readability.
  const unfolded = line.slice(colon + 1).split(/\r?\n/).map((part) => part.trim()).join(" ").trim()
  return decodeWords(unfolded)
}

const addresses = (list: ReadonlyArray<Address> | undefined): Array<string> =>
  (list ?? []).flatMap((a) => a.group ? a.group.map((m) => m.address) : [a.address]).filter((a) => a !== "")

const MONTHS: Record<string, number> = {
  jan: 0,
  feb: 1,
  mar: 2,
  apr: 3,
  may: 4,
  jun: 5,
  jul: 6,
  aug: 7,
  sep: 8,
  oct: 9,
  nov: 10,
  dec: 11
}
const ZONES: Record<string, number> = {
  ut: 0,
  utc: 0,
  gmt: 0,
  z: 0,
  est: -300,
  edt: -240,
  cst: -360,
  cdt: -300,
  mst: -420,
  mdt: -360,
  pst: -480,
  pdt: -420
}
const RFC5322_DATE =
  /^(?:[a-z]{3,9},?\s*)?(\d{1,2})\s+([a-z]{3})[a-z]*\.?\s+(\d{2,4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([+-]\d{4}|[a-z]{1,5}))?\s*(?:\(.*\))?$/i
const ISO_DATE = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i

/**
 * The Date header as ISO-8601 UTC. postal-mime falls back on `new Date(value)`, whose legacy
 * parser reads words like "sometime 5" as a date, so the format is checked strictly here.
 */
export const parseDateHeader = (value: string): string | undefined => {
  const text = value.trim()
  if (ISO_DATE.test(text)) {
    const ms = Date.parse(text.replace(" ", "T"))
    return Number.isNaN(ms) ? undefined : new Date(ms).toISOString()
  }
  const m = RFC5322_DATE.exec(text)
  if (!m) return undefined
  const [, dayText, monthText, yearText, hourText, minuteText, secondText, zoneText] = m
  const month = MONTHS[monthText!.toLowerCase()]
  if (month === undefined) return undefined
  let year = Number(yearText)
  // RFC 5322 §4.3: two-digit years below 50 are 20xx, others (and three-digit years) 19xx.
  if (yearText!.length === 2) year += year < 50 ? 2000 : 1900
  else if (yearText!.length === 3) year += 1900
  const day = Number(dayText)
  const hour = Number(hourText)
  const minute = Number(minuteText)
  const second = secondText === undefined ? 0 : Number(secondText)
  const daysInMonth = new Date(Date.UTC(year, month + 1, 0)).getUTCDate()
  if (day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 60) return undefined
  let offset = 0
  if (zoneText !== undefined) {
    if (/^[+-]\d{4}$/.test(zoneText)) {
      const sign = zoneText.startsWith("-") ? -1 : 1
      const hours = Number(zoneText.slice(1, 3))
      const minutes = Number(zoneText.slice(3))
      if (minutes > 59) return undefined
      offset = sign * (hours * 60 + minutes)
    } else {
      const known = ZONES[zoneText.toLowerCase()]
      // RFC 5322 §4.3: military single letters carry no reliable information and mean -0000.
      if (known === undefined && zoneText.length !== 1) return undefined
      offset = known ?? 0
    }
  }
  return new Date(Date.UTC(year, month, day, hour, minute, Math.min(second, 59)) - offset * 60_000).toISOString()
}

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: "\"",
  apos: "'",
  nbsp: " ",
  copy: "©",
  reg: "®",
  trade: "™",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  lsquo: "‘",
  rsquo: "’",
  ldquo: "“",
  rdquo: "”",
  bull: "•",
  euro: "€",
  laquo: "«",
  raquo: "»",
  middot: "·",
  times: "×"
}

const decodeEntities = (text: string): string =>
  text.replace(/&(#x[0-9a-f]{1,6}|#\d{1,7}|[a-z]{1,8});/gi, (whole, name: string) => {
    if (name.startsWith("#")) {
      const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10)
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole
    }
    return ENTITIES[name.toLowerCase()] ?? whole
  })

/**
 * Drops comments and script/style/head blocks. Done with indexOf rather than a lazy regex so that
 * many unclosed openers cost linear, not quadratic, time; an unclosed block runs to the end, as in browsers.
 */
const stripBlocks = (html: string): string => {
  const opener = /<!--|<(script|style|head|title)\b/gi
  let out = ""
  let from = 0
  for (let m = opener.exec(html); m !== null; m = opener.exec(html)) {
    out += html.slice(from, m.index)
    const closer = m[1] === undefined ? /-->/g : new RegExp(`</${m[1]}[^<>]*>`, "gi")
    closer.lastIndex = m.index + m[0].length
    if (closer.exec(html) === null) return out
    from = closer.lastIndex
    opener.lastIndex = from
  }
  return out + html.slice(from)
}

const HREF = /\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))/i

const hrefOf = (tag: string): string => {
  const m = HREF.exec(tag)
  return m?.[1] ?? m?.[2] ?? m?.[3] ?? ""
}

// Tag patterns use [^<>]* so a stray "<" costs one short scan instead of a scan to the end of the input.
const LINK = /\u0000([^\u0000\u0001\u0002]*)\u0001([^\u0000\u0002]*)\u0002/g
const BLOCK_TAG = /<\/?(?:p|div|h[1-6]|ul|ol|table|tr|blockquote|pre|section|article|header|footer|hr)\b[^<>]*>/gi

/** A readable text rendition of an HTML body: block structure as line breaks, links kept as "text (url)". */
export const htmlToText = (html: string): string => {
  const marked = stripBlocks(html.replace(/[\u0000-\u0002]/g, ""))
    .replace(/\s+/g, " ")
    // Links are marked first and resolved once their label's own tags are gone.
    .replace(/<a\b[^<>]*>/gi, (tag) => `\u0000${hrefOf(tag)}\u0001`)
    .replace(/<\/a\s*>/gi, "\u0002")
    .replace(/<br\b[^<>]*>/gi, "\n")
    .replace(/<li\b[^<>]*>/gi, "\n- ")
    .replace(/<\/li\s*>/gi, "")
    .replace(BLOCK_TAG, "\n")
    .replace(/<\/t[dh]\s*>/gi, "\t")
    .replace(/<[^<>]*>/g, "")
    .replace(LINK, (_, href: string, label: string) => {
      const text = label.trim()
      return href === "" || href.startsWith("#") || text === "" || href.replace(/^mailto:/i, "") === text
        ? text || href
        : `${text} (${href})`
    })
    .replace(/[\u0000-\u0002]/g, "")
  return decodeEntities(marked)
    .split("\n")
    .map((line) => line.replace(/[ \t\u00a0]+/g, " ").trim())
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim()
}

const toOutput = (email: Email): EmailParseOutput | undefined => {
  const lines = email.headerLines.filter((h) => FIELD_NAME.test(h.key))
  if (lines.length === 0) return undefined
  // A Map, not an object literal: a header named "__proto__" must stay a plain entry.
  const headers = new Map<string, string>()
  for (const h of lines) headers.set(h.key, headerValue(h.line))
  const first = (key: string) => {
    const line = lines.find((h) => h.key === key)
    return line ? headerValue(line.line) : undefined
  }
  const sender = email.from?.group ? email.from.group[0] : email.from
  const dateHeader = first("date")
  const date = dateHeader === undefined ? undefined : parseDateHeader(dateHeader)
  const messageId = first("message-id")
  const text = email.text?.trim() ? email.text : email.html ? htmlToText(email.html) : ""
  return {
    from: sender?.address ?? "",
    ...(sender?.name ? { from_name: sender.name } : {}),
    to: addresses(email.to),
    cc: addresses(email.cc),
    subject: first("subject") ?? "",
    ...(date !== undefined ? { date } : {}),
    ...(messageId ? { message_id: messageId } : {}),
    body: text.replace(/\r\n?/g, "\n").trimEnd(),
    headers: Object.fromEntries(headers)
  }
}

/** `email.parse`: an RFC 5322 message into sender, recipients, subject, date, text body and headers. */
export const EmailParse: Tool.Tool = Tool.make({
  id: TOOL_ID,
  name: "Parse email",
  description: "Parses a raw email message (RFC 5322 / MIME, as found in .eml files or IMAP bodies) into its parts. " +
    "Returns the sender address (`from`) and display name (`from_name`), recipient addresses (`to`, `cc`), the " +
    "decoded subject, the Date header as ISO-8601 UTC (`date`, omitted when missing or unparseable), the " +
    "Message-ID, the plain-text body (rendered from HTML when there is no text part; attachments are not " +
    "returned) and all headers keyed by lower-cased name. Handles folded and encoded (RFC 2047) headers, " +
    "multipart messages, quoted-printable and base64 bodies.",
  input: EmailParseInput,
  output: EmailParseOutput,
  run: ({ raw }) =>
    Effect.gen(function*() {
      if (raw.trim() === "") {
        return yield* Effect.fail(fail("raw is empty: expected an RFC 5322 message (headers, a blank line, the body)"))
      }
      const email = yield* Effect.tryPromise({
        try: () => PostalMime.parse(raw),
        catch: (error) => fail(`could not parse the message: ${messageOf(error)}`)
      })
      const output = toOutput(email)
      if (output === undefined) {
        return yield* Effect.fail(
          fail("no headers found: raw must start with header lines such as \"From: ...\" (RFC 5322 message)")
        )
      }
      return output
    })
})
