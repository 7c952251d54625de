import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { EmailParse, htmlToText, parseDateHeader } from "../src/builtin/Email.js"
import { call, decodeFailure, failure } from "./helpers.js"

const crlf = (...lines: Array<string>) => lines.join("\r\n")

const multipart = crlf(
  "Return-Path: <jerome@example.com>",
  "From: =?UTF-8?B?SsOpcsO0bWU=?= Dupont <jerome@example.com>",
  "To: Bob <bob@example.com>, carol@example.com",
  "Cc: Team: dan@example.com, eve@example.com;, Frank <frank@example.com>",
  "Subject: =?UTF-8?B?UsOpdW5pb24=?= =?UTF-8?Q?_de_d=C3=A9cembre?= and a very long",
  "   folded tail",
  "Date: Tue, 05 Mar 2024 14:30:00 +0100",
  "Message-ID: <abc.123@example.com>",
  "X-Custom: first",
  "X-Custom: second",
  "MIME-Version: 1.0",
  "Content-Type: multipart/alternative; boundary=\"b1\"",
  "",
  "This is a multi-part message in MIME format.",
  "--b1",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: quoted-printable",
  "",
  "Bonjour Bob,",
  "",
  "Le caf=C3=A9 est pr=C3=AAt, et cette ligne est tr=C3=A8s longue donc elle est c=",
  "oup=C3=A9e.",
  "",
  "--b1",
  "Content-Type: text/html; charset=utf-8",
  "",
  "<p>Bonjour <b>Bob</b></p>",
  "--b1--",
  ""
)

describe("email.parse", () => {
  it.effect("parses a multipart/alternative message with folded, encoded headers and CRLF line endings", () =>
    Effect.gen(function*() {
      const out = yield* call(EmailParse, { raw: multipart })
      expect(out).toEqual({
        from: "jerome@example.com",
        from_name: "Jérôme Dupont",
        to: ["bob@example.com", "carol@example.com"],
        cc: ["dan@example.com", "eve@example.com", "frank@example.com"],
        subject: "Réunion de décembre and a very long folded tail",
        date: "2024-03-05T13:30:00.000Z",
        message_id: "<abc.123@example.com>",
        body: "Bonjour Bob,\n\nLe café est prêt, et cette ligne est très longue donc elle est coupée.",
        headers: expect.objectContaining({
          "return-path": "<jerome@example.com>",
          from: "Jérôme Dupont <jerome@example.com>",
          subject: "Réunion de décembre and a very long folded tail",
          date: "Tue, 05 Mar 2024 14:30:00 +0100",
          "x-custom": "second",
          "content-type": "multipart/alternative; boundary=\"b1\""
        })
      })
      expect(Object.keys(out.headers).every((k) => k === k.toLowerCase())).toBe(true)
    }))

  it.effect("handles LF-only messages, a plain From and a missing Cc", () =>
    Effect.gen(function*() {
      const out = yield* call(EmailParse, {
        raw: "From: alice@example.com\nTo: bob@example.com\nSubject: Hi\n\nLine one\nLine two\n"
      })
      expect(out.from).toBe("alice@example.com")
      expect(out).not.toHaveProperty("from_name")
      expect(out.to).toEqual(["bob@example.com"])
      expect(out.cc).toEqual([])
      expect(out.subject).toBe("Hi")
      expect(out.body).toBe("Line one\nLine two")
      expect(out).not.toHaveProperty("date")
      expect(out).not.toHaveProperty("message_id")
    }))

  it.effect("renders an HTML-only message as text and decodes base64", () =>
    Effect.gen(function*() {
      const html = "<html><head><style>p{color:red}</style></head><body><h1>Invoice</h1>" +
        "<p>Total: 12&nbsp;&euro; &amp; more<br>Due <b>soon</b></p>" +
        "<ul><li>One</li><li>Two</li></ul><p><a href=\"https://example.com/pay\">Pay now</a></p></body></html>"
      const raw = crlf(
        "From: Billing <billing@example.com>",
        "To: you@example.com",
        "Subject: Invoice",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        Buffer.from(html).toString("base64"),
        ""
      )
      const out = yield* call(EmailParse, { raw })
      expect(out.body).toBe(
        "Invoice\n\nTotal: 12 € & more\nDue soon\n\n- One\n- Two\n\nPay now (https://example.com/pay)"
      )
      expect(out.from_name).toBe("Billing")
    }))

  it.effect("omits an unparseable date instead of failing", () =>
    Effect.gen(function*() {
      const out = yield* call(EmailParse, { raw: "From: a@example.com\r\nDate: sometime 5\r\n\r\nbody" })
      expect(out).not.toHaveProperty("date")
      expect(out.headers.date).toBe("sometime 5")
      expect(out.body).toBe("body")
    }))

  it("reads RFC 5322 dates strictly", () => {
    expect(parseDateHeader("Tue, 05 Mar 2024 14:30:00 +0100")).toBe("2024-03-05T13:30:00.000Z")
    expect(parseDateHeader("5 Mar 2024 14:30 -0500 (EST)")).toBe("2024-03-05T19:30:00.000Z")
    expect(parseDateHeader("Tue, 5 Mar 24 14:30:00 GMT")).toBe("2024-03-05T14:30:00.000Z")
    expect(parseDateHeader("Tue, 05 Mar 2024 14:30:00 PST")).toBe("2024-03-05T22:30:00.000Z")
    expect(parseDateHeader("2024-03-05T14:30:00Z")).toBe("2024-03-05T14:30:00.000Z")
    expect(parseDateHeader("31 Feb 2024 10:00:00 +0000")).toBeUndefined()
    expect(parseDateHeader("Tuesday 12")).toBeUndefined()
    expect(parseDateHeader("")).toBeUndefined()
  })

  it("renders HTML without quadratic blow-up on unclosed tags", () => {
    const start = Date.now()
    expect(htmlToText("<script>".repeat(50_000) + "x")).toBe("")
    expect(htmlToText("a " + "<".repeat(200_000) + " b").startsWith("a <<<")).toBe(true)
    expect(htmlToText("<a href='x'>".repeat(50_000) + "y")).toContain("y")
    expect(Date.now() - start).toBeLessThan(5_000)
  })

  it.effect("fails on empty raw and on text without headers", () =>
    Effect.gen(function*() {
      const empty = yield* failure(EmailParse, { raw: "" })
      expect(empty._tag).toBe("ToolFailed")
      expect(empty.message).toContain("raw is empty")
      expect(empty).toMatchObject({ tool_id: "email.parse", retryable: false })

      const prose = yield* failure(EmailParse, { raw: "hello world, this is not an email\n\nreally" })
      expect(prose._tag).toBe("ToolFailed")
      expect(prose.message).toContain("no headers found")

      const bodyOnly = yield* failure(EmailParse, { raw: "\r\njust a body" })
      expect(bodyOnly.message).toContain("no headers found")
    }))

  it.effect("rejects wrong types, missing and extra fields at decode", () =>
    Effect.gen(function*() {
      const wrongType = yield* decodeFailure(EmailParse, { raw: 42 })
      expect(wrongType._tag).toBe("ToolInputInvalid")
      expect(wrongType.details?.field).toBe("raw")

      const missing = yield* decodeFailure(EmailParse, {})
      expect(missing.details?.field).toBe("raw")

      const extra = yield* decodeFailure(EmailParse, { raw: "From: a@b.c\r\n\r\nx", attachments: true })
      expect(extra._tag).toBe("ToolInputInvalid")
      expect(extra.details?.field).toBe("attachments")

      const tooLarge = yield* decodeFailure(EmailParse, { raw: "x".repeat(1_048_577) })
      expect(tooLarge.details?.field).toBe("raw")
    }))

  it("advertises a JSON Schema", () => {
    expect(EmailParse.spec.tool_id).toBe("email.parse")
    expect(EmailParse.spec.builtin).toBe(true)
    expect(EmailParse.spec.side_effect).toBe(false)
    expect(EmailParse.spec.input_schema).toMatchObject({
      type: "object",
      required: ["raw"],
      properties: { raw: { type: "string", maxLength: 1_048_576 } },
      additionalProperties: false
    })
    expect(EmailParse.spec.output_schema).toMatchObject({
      type: "object",
      required: expect.arrayContaining(["from", "to", "cc", "subject", "body", "headers"])
    })
  })
})
