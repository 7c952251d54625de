import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { CreateLead, CreateOpportunity, Query, tools, UpdateLead } from "../src/builtin/Salesforce.js"
import type { Fake, Received, Reply } from "./vendorFake.js"
import { failureOf, runTool, runUndecoded, startFake, TOKEN } from "./vendorFake.js"

const API = "/services/data/v60.0"
const LEAD_ID = "00Q5e00000AbCdEFGH"

const errors = (status: number, ...entries: Array<{ message: string; errorCode: string; fields?: Array<string> }>) => ({
  status,
  json: entries.map((e) => ({ fields: [], ...e }))
})

// A fake Salesforce REST API: documented paths, request checks, and the documented success and error bodies.
const salesforce = (req: Received): Reply => {
  if (req.headers.authorization !== TOKEN) {
    return errors(401, { message: "Session expired or invalid", errorCode: "INVALID_SESSION_ID" })
  }
  if (req.method !== "GET" && req.headers["content-type"] !== "application/json") {
    return errors(415, { message: "Unsupported media type", errorCode: "UNSUPPORTED_MEDIA_TYPE" })
  }
  if (req.method === "POST" && req.rawPath === `${API}/sobjects/Lead/`) {
    if (typeof req.json?.LastName !== "string") {
      return errors(400, {
        message: "Required fields are missing: [LastName]",
        errorCode: "REQUIRED_FIELD_MISSING",
        fields: ["LastName"]
      })
    }
    if (req.json.Company === "Busy") {
      return errors(503, { message: "Server unavailable", errorCode: "SERVER_UNAVAILABLE" })
    }
    return { status: 201, json: { id: "00Q5e00000NeWLeAD1", success: true, errors: [] } }
  }
  if (req.method === "PATCH" && req.rawPath.startsWith(`${API}/sobjects/Lead/`)) {
    if (req.rawPath === `${API}/sobjects/Lead/${LEAD_ID}`) return { status: 204 }
    return errors(404, { message: "The requested resource does not exist", errorCode: "NOT_FOUND" })
  }
  if (req.method === "POST" && req.rawPath === `${API}/sobjects/Opportunity/`) {
    const { CloseDate, Name, StageName } = req.json ?? {}
    if (StageName === "Nope") {
      return errors(400, {
        message: "Stage: bad value for restricted picklist field: Nope",
        errorCode: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        fields: ["StageName"]
      })
    }
    if (typeof Name !== "string" || typeof CloseDate !== "string") return errors(400, { message: "?", errorCode: "X" })
    return { status: 201, json: { id: "0065e00000NeWoPP01", success: true, errors: [] } }
  }
  if (req.method === "GET" && req.rawPath === `${API}/query`) {
    const q = req.query.get("q")
    if (q === "SELECT Id FROM Nothing") {
      return errors(400, { message: "sObject type 'Nothing' is not supported.", errorCode: "INVALID_TYPE" })
    }
    if (q === "SELECT Id FROM Lead WHERE Company = 'A&B' LIMIT 1") {
      return {
        json: {
          totalSize: 3,
          done: false,
          nextRecordsUrl: `${API}/query/01gD0000002HU6KIAW-1`,
          records: [{ attributes: { type: "Lead", url: `${API}/sobjects/Lead/${LEAD_ID}` }, Id: LEAD_ID }]
        }
      }
    }
    return errors(400, { message: `unexpected query ${q}`, errorCode: "MALFORMED_QUERY" })
  }
  if (req.method === "GET" && req.rawPath === `${API}/query/01gD0000002HU6KIAW-1`) {
    return { json: { totalSize: 3, done: true, records: [{ Id: "a" }, { Id: "b" }] } }
  }
  return errors(404, { message: "The requested resource does not exist", errorCode: "NOT_FOUND" })
}

let fake: Fake
const setup = () => ({ baseUrl: `${fake.url}/` })

beforeAll(async () => {
  fake = await startFake(salesforce)
})
afterAll(() => fake.close())
beforeEach(() => {
  fake.received.length = 0
})

describe("salesforce tools", () => {
  it("are advertised with the salesforce provider and the instance host patterns", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual([
      "salesforce.create_lead",
      "salesforce.update_lead",
      "salesforce.create_opportunity",
      "salesforce.query"
    ])
    for (const t of tools) {
      expect(t.spec.provider).toBe("salesforce")
      expect(t.hosts).toEqual(["*.my.salesforce.com", "*.salesforce.com"])
    }
    expect(tools.map((t) => t.spec.side_effect)).toEqual([true, true, true, false])
    expect(Query.spec.cacheable).toBe(true)
  })

  it.effect("create_lead posts the fields with the credential and returns the id", () =>
    Effect.gen(function*() {
      const fields = { LastName: "Lovelace", Company: "Analytical", Email: "ada@example.com", Region__c: "EU" }
      const out = yield* runTool(CreateLead, fields, setup())
      expect(out).toEqual({ id: "00Q5e00000NeWLeAD1", success: true })
      expect(fake.received[0]).toMatchObject({ method: "POST", rawPath: `${API}/sobjects/Lead/` })
      expect(fake.received[0]!.json).toEqual(fields)
      expect(fake.received[0]!.headers.accept).toBe("application/json")
    }))

  it.effect("an error array becomes a ToolFailed with errorCode, message and fields", () =>
    Effect.gen(function*() {
      // Bypasses decoding, which would reject the missing LastName, to see the documented error.
      const error = yield* failureOf(runUndecoded(CreateLead, { Company: "Analytical" }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", status: 400, retryable: false })
      expect(error.message).toContain("REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]")
      expect(error.message).toContain("(fields: LastName)")
      const invalid = yield* failureOf(CreateLead.decode({ Company: "Analytical" }))
      expect(invalid.details.field).toBe("LastName")
    }))

  it.effect("a 503 is retryable", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(CreateLead, { LastName: "L", Company: "Busy" }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", status: 503, retryable: true })
      expect(error.message).toContain("SERVER_UNAVAILABLE")
    }))

  it.effect("without an instance URL it fails clearly, before any request", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(CreateLead, { LastName: "L", Company: "C" }, { baseUrl: undefined }))
      expect(error).toMatchObject({ _tag: "ToolFailed", retryable: false })
      expect(error.message).toContain("settings.providers.salesforce.base_url")
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("a missing credential fails before any request", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(
        runTool(Query, { q: "SELECT Id FROM Lead" }, { ...setup(), credential: undefined })
      )
      expect(error).toMatchObject({
        _tag: "ToolFailed",
        retryable: false,
        message: "no salesforce connection for this tenant: connect it with PUT /v1/connections/salesforce"
      })
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("update_lead patches the fields and accepts 204 No Content", () =>
    Effect.gen(function*() {
      const out = yield* runTool(UpdateLead, { id: LEAD_ID, fields: { Status: "Working", Phone: null } }, setup())
      expect(out).toEqual({ id: LEAD_ID, updated: true })
      expect(fake.received[0]).toMatchObject({ method: "PATCH", rawPath: `${API}/sobjects/Lead/${LEAD_ID}` })
      expect(fake.received[0]!.json).toEqual({ Status: "Working", Phone: null })
      const missing = yield* failureOf(runTool(UpdateLead, { id: "00Q000000000000", fields: { Title: "x" } }, setup()))
      expect(missing).toMatchObject({ status: 404, retryable: false })
      expect(missing.message).toContain("NOT_FOUND")
    }))

  it.effect("an id with \"/\" or \"..\" cannot change the path", () =>
    Effect.gen(function*() {
      expect((yield* failureOf(UpdateLead.decode({ id: "../Account/001", fields: { Title: "x" } })))._tag)
        .toBe("ToolInputInvalid")
      // Even past validation, the id stays one encoded path segment.
      yield* failureOf(runUndecoded(UpdateLead, { id: "../../sobjects/Account/001", fields: { Title: "x" } }, setup()))
      expect(fake.received[0]!.rawPath).toBe(`${API}/sobjects/Lead/..%2F..%2Fsobjects%2FAccount%2F001`)
      for (const id of ["..", "."]) {
        const error = yield* failureOf(runUndecoded(UpdateLead, { id, fields: { Title: "x" } }, setup()))
        expect(error._tag).toBe("ToolFailed")
      }
      const page = yield* failureOf(runUndecoded(Query, { nextRecordsUrl: "/services/data/v60.0/../../x" }, setup()))
      expect(page._tag).toBe("ToolFailed")
      expect(fake.received).toHaveLength(1)
    }))

  it.effect("create_opportunity posts the fields; an unknown stage fails with the picklist error", () =>
    Effect.gen(function*() {
      const fields = { Name: "Acme renewal", StageName: "Prospecting", CloseDate: "2024-06-30", Amount: 1500 }
      const out = yield* runTool(CreateOpportunity, fields, setup())
      expect(out).toEqual({ id: "0065e00000NeWoPP01", success: true })
      expect(fake.received[0]!.json).toEqual(fields)
      const error = yield* failureOf(runTool(CreateOpportunity, { ...fields, StageName: "Nope" }, setup()))
      expect(error.message).toContain("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
      const badDate = yield* failureOf(CreateOpportunity.decode({ ...fields, CloseDate: "30/06/2024" }))
      expect(badDate.details.field).toBe("CloseDate")
    }))

  it.effect("query sends the SOQL URL-encoded and returns a page with nextRecordsUrl, then the next page", () =>
    Effect.gen(function*() {
      const q = "SELECT Id FROM Lead WHERE Company = 'A&B' LIMIT 1"
      const first = yield* runTool(Query, { q }, setup())
      expect(first).toEqual({
        totalSize: 3,
        done: false,
        nextRecordsUrl: `${API}/query/01gD0000002HU6KIAW-1`,
        records: [{ attributes: { type: "Lead", url: `${API}/sobjects/Lead/${LEAD_ID}` }, Id: LEAD_ID }]
      })
      expect(fake.received[0]!.method).toBe("GET")
      expect([...fake.received[0]!.query.keys()]).toEqual(["q"])
      const next = yield* runTool(Query, { nextRecordsUrl: first.nextRecordsUrl }, setup())
      expect(next).toEqual({ totalSize: 3, done: true, records: [{ Id: "a" }, { Id: "b" }] })
      const invalid = yield* failureOf(runTool(Query, { q: "SELECT Id FROM Nothing" }, setup()))
      expect(invalid).toMatchObject({ status: 400, retryable: false })
      expect(invalid.message).toContain("INVALID_TYPE: sObject type 'Nothing' is not supported.")
    }))
})
