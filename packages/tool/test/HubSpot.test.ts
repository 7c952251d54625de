import { afterAll, beforeAll, beforeEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { CreateContact, CreateDeal, tools, UpdateContact } from "../src/builtin/HubSpot.js"
import type { Fake, Received, Reply } from "./vendorFake.js"
import { failureOf, runTool, runUndecoded, startFake, TOKEN } from "./vendorFake.js"

const error = (status: number, category: string, message: string): Reply => ({
  status,
  json: { status: "error", message, correlationId: "b8f9c1d2-0000-4000-8000-000000000000", category }
})

const record = (id: string, properties: Record<string, string>) => ({
  id,
  properties: { ...properties, hs_object_id: id, createdate: "2024-04-05T10:00:00.000Z" },
  createdAt: "2024-04-05T10:00:00.000Z",
  updatedAt: "2024-04-05T10:00:01.000Z",
  archived: false
})

const allStrings = (properties: unknown) =>
  typeof properties === "object" && properties !== null &&
  Object.values(properties).every((v) => typeof v === "string")

// A fake HubSpot CRM v3: documented paths, request checks, and the documented success and error bodies.
const hubspot = (req: Received): Reply => {
  if (req.headers.authorization !== TOKEN) {
    return error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
  }
  if (req.headers["content-type"] !== "application/json") return error(415, "VALIDATION_ERROR", "bad content type")
  const properties = req.json?.properties
  if (!allStrings(properties) || Object.keys(req.json).length !== 1) {
    return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
  }
  if (req.method === "POST" && req.rawPath === "/crm/v3/objects/contacts") {
    if (properties.email === "taken@example.com") {
      return error(409, "CONFLICT", "Contact already exists. Existing ID: 501")
    }
    if (properties.email === "busy@example.com") {
      return {
        status: 429,
        json: { status: "error", message: "You have reached your secondly limit.", errorType: "RATE_LIMIT" }
      }
    }
    return { status: 201, json: record("601", properties) }
  }
  const update = /^\/crm\/v3\/objects\/contacts\/([^/]+)$/.exec(req.rawPath)
  if (req.method === "PATCH" && update) {
    if (update[1] === "404") return error(404, "OBJECT_NOT_FOUND", "resource not found")
    return { json: record(decodeURIComponent(update[1]!), properties) }
  }
  if (req.method === "POST" && req.rawPath === "/crm/v3/objects/deals") {
    if (properties.dealstage === "nonexistent") {
      return error(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: [{\"isValid\":false,\"message\":\"nonexistent was not one of the allowed " +
          "options\",\"error\":\"INVALID_OPTION\",\"name\":\"dealstage\"}]"
      )
    }
    if (properties.dealname === "down") return { status: 503, text: "Service Unavailable" }
    return { status: 201, json: record("701", properties) }
  }
  return { status: 404, text: "" }
}

let fake: Fake
const setup = () => ({ baseUrl: fake.url })

beforeAll(async () => {
  fake = await startFake(hubspot)
})
afterAll(() => fake.close())
beforeEach(() => {
  fake.received.length = 0
})

describe("hubspot tools", () => {
  it("are advertised with the hubspot provider and host, all as writes", () => {
    expect(tools.map((t) => t.spec.tool_id)).toEqual([
      "hubspot.create_contact",
      "hubspot.update_contact",
      "hubspot.create_deal"
    ])
    for (const t of tools) {
      expect(t.spec).toMatchObject({ provider: "hubspot", side_effect: true, cacheable: false })
      expect(t.hosts).toEqual(["api.hubapi.com"])
    }
  })

  it.effect("create_contact posts the properties with the credential and returns the record", () =>
    Effect.gen(function*() {
      const out = yield* runTool(
        CreateContact,
        { properties: { email: "ada@example.com", firstname: "Ada", lastname: "Lovelace", jobtitle: "Analyst" } },
        setup()
      )
      expect(out).toEqual({
        id: "601",
        properties: {
          email: "ada@example.com",
          firstname: "Ada",
          lastname: "Lovelace",
          jobtitle: "Analyst",
          hs_object_id: "601",
          createdate: "2024-04-05T10:00:00.000Z"
        },
        createdAt: "2024-04-05T10:00:00.000Z",
        updatedAt: "2024-04-05T10:00:01.000Z",
        archived: false
      })
      const [req] = fake.received
      expect(req!.method).toBe("POST")
      expect(req!.headers.accept).toBe("application/json")
    }))

  it.effect("a 409 conflict fails with HubSpot's category and message, not retryable", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(CreateContact, { properties: { email: "taken@example.com" } }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", status: 409, retryable: false })
      expect(error.message).toContain("CONFLICT: Contact already exists. Existing ID: 501")
    }))

  it.effect("a 429 is retryable", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(runTool(CreateContact, { properties: { email: "busy@example.com" } }, setup()))
      expect(error).toMatchObject({ _tag: "ToolFailed", status: 429, retryable: true })
      expect(error.message).toContain("RATE_LIMIT")
    }))

  it.effect("create_contact without email is rejected naming properties.email, before any request", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(CreateContact.decode({ properties: { firstname: "Ada" } }))
      expect(error._tag).toBe("ToolInputInvalid")
      expect(error.details.issues.map((i: { field: string }) => i.field)).toContain("properties.email")
      const bad = yield* failureOf(runTool(CreateContact, { properties: { email: "not-an-email" } }, setup()))
      expect(bad._tag).toBe("ToolInputInvalid")
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("a missing credential fails before any request", () =>
    Effect.gen(function*() {
      const error = yield* failureOf(
        runTool(CreateContact, { properties: { email: "ada@example.com" } }, { ...setup(), credential: undefined })
      )
      expect(error).toMatchObject({
        _tag: "ToolFailed",
        retryable: false,
        message: "no hubspot connection for this tenant: connect it with PUT /v1/connections/hubspot"
      })
      expect(fake.received).toHaveLength(0)
    }))

  it.effect("update_contact patches only the given properties", () =>
    Effect.gen(function*() {
      const out = yield* runTool(UpdateContact, { contactId: "601", properties: { phone: "+33 1 23" } }, setup())
      expect(out).toMatchObject({ id: "601", properties: { phone: "+33 1 23" } })
      expect(fake.received[0]).toMatchObject({ method: "PATCH", rawPath: "/crm/v3/objects/contacts/601" })
      expect(fake.received[0]!.json).toEqual({ properties: { phone: "+33 1 23" } })
      const missing = yield* failureOf(
        runTool(UpdateContact, { contactId: "404", properties: { phone: "1" } }, setup())
      )
      expect(missing).toMatchObject({ status: 404, retryable: false })
      expect(missing.message).toContain("OBJECT_NOT_FOUND: resource not found")
      const empty = yield* failureOf(UpdateContact.decode({ contactId: "601", properties: {} }))
      expect(empty._tag).toBe("ToolInputInvalid")
    }))

  it.effect("update_contact by email sends idProperty=email", () =>
    Effect.gen(function*() {
      yield* runTool(
        UpdateContact,
        { contactId: "ada@example.com", idProperty: "email", properties: { lastname: "King" } },
        setup()
      )
      expect(fake.received[0]!.rawPath).toBe("/crm/v3/objects/contacts/ada%40example.com")
      expect(fake.received[0]!.query.get("idProperty")).toBe("email")
    }))

  it.effect("an id with \"/\" or \"..\" cannot change the path", () =>
    Effect.gen(function*() {
      yield* runTool(UpdateContact, { contactId: "../deals/1?x=1", properties: { phone: "1" } }, setup())
      expect(fake.received[0]!.rawPath).toBe("/crm/v3/objects/contacts/..%2Fdeals%2F1%3Fx%3D1")
      expect(fake.received[0]!.query.size).toBe(0)
      for (const contactId of ["..", "."]) {
        const error = yield* failureOf(
          runUndecoded(UpdateContact, { contactId, properties: { phone: "1" } }, setup())
        )
        expect(error._tag).toBe("ToolFailed")
      }
      expect(fake.received).toHaveLength(1)
    }))

  it.effect("create_deal sends string properties and returns the deal", () =>
    Effect.gen(function*() {
      const out = yield* runTool(
        CreateDeal,
        {
          properties: {
            dealname: "Acme renewal",
            amount: 1500.5,
            dealstage: "appointmentscheduled",
            pipeline: "default",
            closedate: "2024-06-30"
          }
        },
        setup()
      )
      expect(out.id).toBe("701")
      expect(out.properties).toMatchObject({ dealname: "Acme renewal", amount: "1500.5" })
      expect(fake.received[0]!.json).toEqual({
        properties: {
          dealname: "Acme renewal",
          amount: "1500.5",
          dealstage: "appointmentscheduled",
          pipeline: "default",
          closedate: "2024-06-30"
        }
      })
    }))

  it.effect("create_deal reports a 400 validation error and retries a 503", () =>
    Effect.gen(function*() {
      const invalid = yield* failureOf(
        runTool(CreateDeal, { properties: { dealname: "x", dealstage: "nonexistent" } }, setup())
      )
      expect(invalid).toMatchObject({ _tag: "ToolFailed", status: 400, retryable: false })
      expect(invalid.message).toContain("VALIDATION_ERROR: Property values were not valid")
      expect(invalid.message).toContain("nonexistent was not one of the allowed options")
      const down = yield* failureOf(runTool(CreateDeal, { properties: { dealname: "down" } }, setup()))
      expect(down).toMatchObject({ _tag: "ToolFailed", status: 503, retryable: true })
      const noName = yield* failureOf(CreateDeal.decode({ properties: { amount: 5 } }))
      expect(noName.details.field).toBe("properties.dealname")
    }))
})
