import type { EgressMethod } from "@altan/domain/Egress"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { isRecord } from "./internal.js"
import { answeredHttp, baseUrlOf, checkedSegment, colonDetail, decodeVendor, vendorCall } from "./Vendor.js"

const PROVIDER = "hubspot"
const DEFAULT_BASE_URL = "https://api.hubapi.com"
/** The HubSpot API host. */
export const HUBSPOT_HOSTS: ReadonlyArray<string> = ["api.hubapi.com"]

/** `CATEGORY: message` from HubSpot's `{ status: "error", message, category }` (or `errorType` on 429). */
const describeError = (body: unknown): string | undefined => {
  if (!isRecord(body) || typeof body["message"] !== "string") return undefined
  const category = typeof body["category"] === "string"
    ? body["category"]
    : typeof body["errorType"] === "string"
    ? body["errorType"]
    : undefined
  return category === undefined ? body["message"] : `${category}: ${body["message"]}`
}

/** One CRM API call with the tenant's credential; non-2xx answers fail with HubSpot's category and message. */
const callHubSpot = (toolId: string, ctx: Tool.ToolContext, method: EgressMethod, path: string, body: unknown) =>
  vendorCall({
    toolId,
    provider: PROVIDER,
    ctx,
    url: `${baseUrlOf(ctx, PROVIDER, DEFAULT_BASE_URL)}${path}`,
    method,
    json: body,
    contentType: "application/json",
    onError: answeredHttp("HubSpot", colonDetail(describeError))
  })

/** A CRM object as HubSpot returns it (associations and other extras dropped). */
export const CrmObject = Schema.Struct({
  id: Schema.String.annotations({ description: "The record's HubSpot ID." }),
  properties: Schema.Record({ key: Schema.String, value: Schema.NullOr(Schema.String) }).annotations({
    description: "The record's properties as HubSpot stores them (all values are strings or null)."
  }),
  createdAt: Schema.optionalWith(Schema.String, { exact: true }),
  updatedAt: Schema.optionalWith(Schema.String, { exact: true }),
  archived: Schema.optionalWith(Schema.Boolean, { exact: true })
})
export type CrmObject = typeof CrmObject.Type

const shape = (toolId: string) => decodeVendor(toolId, CrmObject, "unexpected HubSpot answer")

const PropertyName = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_]+$/))
const PropertyValue = Schema.Union(Schema.String, Schema.Number, Schema.Boolean)

// HubSpot stores every property as a string; send them as such so numbers and booleans are not rejected.
const toStrings = (properties: Readonly<Record<string, string | number | boolean | undefined>>) => {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(properties)) if (value !== undefined) out[key] = String(value)
  return out
}

const Email = Schema.String.pipe(Schema.pattern(/^[^\s@]+@[^\s@]+$/)).annotations({
  description: "The contact's email address; HubSpot identifies contacts by it."
})

const OtherProperties = Schema.Record({ key: PropertyName, value: PropertyValue }).annotations({
  description: "Any other property by its internal name, e.g. \"jobtitle\", \"lifecyclestage\", \"website\"."
})

const optional = <A, I>(schema: Schema.Schema<A, I>, description: string) =>
  Schema.optionalWith(schema.annotations({ description }), { exact: true })

// ---------------------------------------------------------------------------------------------------------------
// hubspot.create_contact

/** Input of `hubspot.create_contact`. */
export const CreateContactInput = Schema.Struct({
  properties: Schema.Struct(
    {
      email: Email,
      firstname: optional(Schema.String, "First name."),
      lastname: optional(Schema.String, "Last name."),
      phone: optional(Schema.String, "Phone number."),
      company: optional(Schema.String, "Company name (text; does not associate a company record).")
    },
    OtherProperties
  )
})

/** `hubspot.create_contact`: POST /crm/v3/objects/contacts. */
export const CreateContact: Tool.Tool = Tool.make({
  id: "hubspot.create_contact",
  name: "Create a HubSpot contact",
  description: "Creates a contact in the HubSpot CRM. `properties.email` is required; other properties use " +
    "HubSpot internal names (firstname, lastname, phone, company, jobtitle, lifecyclestage, …). Returns " +
    "{ id, properties, createdAt, updatedAt }. Fails with HTTP 409 CONFLICT (the message contains the " +
    "existing contact's ID) when a contact with this email exists: use hubspot.update_contact instead.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: HUBSPOT_HOSTS,
  input: CreateContactInput,
  output: CrmObject,
  run: (input, ctx) =>
    callHubSpot("hubspot.create_contact", ctx, "POST", "/crm/v3/objects/contacts", {
      properties: toStrings(input.properties)
    }).pipe(Effect.flatMap(shape("hubspot.create_contact")))
})

// ---------------------------------------------------------------------------------------------------------------
// hubspot.update_contact

/** Input of `hubspot.update_contact`. */
export const UpdateContactInput = Schema.Struct({
  contactId: Schema.String.pipe(Schema.minLength(1)).annotations({
    description: "The contact's HubSpot ID, e.g. \"12345\" (or its email with idProperty \"email\")."
  }),
  idProperty: optional(
    Schema.Literal("email"),
    "Set to \"email\" when contactId is the contact's email address instead of its ID."
  ),
  properties: Schema.Struct(
    {
      email: optional(Email, "New email address."),
      firstname: optional(Schema.String, "First name."),
      lastname: optional(Schema.String, "Last name."),
      phone: optional(Schema.String, "Phone number."),
      company: optional(Schema.String, "Company name.")
    },
    OtherProperties
  ).pipe(
    Schema.filter((p) => Object.keys(p).length > 0 || "set at least one property", { jsonSchema: { minProperties: 1 } })
  ).annotations({ description: "Only the properties to change; an empty string clears a property." })
})

/** `hubspot.update_contact`: PATCH /crm/v3/objects/contacts/{contactId}. */
export const UpdateContact: Tool.Tool = Tool.make({
  id: "hubspot.update_contact",
  name: "Update a HubSpot contact",
  description: "Updates properties of an existing HubSpot contact, identified by its ID (or by email with " +
    "idProperty \"email\"). Only the given properties change; an empty string clears one. Returns " +
    "{ id, properties, createdAt, updatedAt }. Fails with HTTP 404 when no such contact exists.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  idempotent: true,
  hosts: HUBSPOT_HOSTS,
  input: UpdateContactInput,
  output: CrmObject,
  run: (input, ctx) =>
    Effect.gen(function*() {
      const id = yield* checkedSegment("hubspot.update_contact", input.contactId)
      const query = input.idProperty === undefined ? "" : `?idProperty=${encodeURIComponent(input.idProperty)}`
      const answer = yield* callHubSpot(
        "hubspot.update_contact",
        ctx,
        "PATCH",
        `/crm/v3/objects/contacts/${id}${query}`,
        { properties: toStrings(input.properties) }
      )
      return yield* shape("hubspot.update_contact")(answer)
    })
})

// ---------------------------------------------------------------------------------------------------------------
// hubspot.create_deal

/** Input of `hubspot.create_deal`. */
export const CreateDealInput = Schema.Struct({
  properties: Schema.Struct(
    {
      dealname: Schema.String.pipe(Schema.minLength(1)).annotations({ description: "The deal's name." }),
      amount: optional(Schema.Union(Schema.Number, Schema.String), "The deal amount, e.g. 1500 or \"1500.50\"."),
      dealstage: optional(
        Schema.String,
        "The stage's internal ID, e.g. \"appointmentscheduled\", \"qualifiedtobuy\", \"closedwon\" in the " +
          "default pipeline."
      ),
      pipeline: optional(Schema.String, "The pipeline's internal ID; \"default\" when omitted."),
      closedate: optional(
        Schema.String,
        "Expected close date, ISO 8601, e.g. \"2024-06-30\" or \"2024-06-30T00:00:00Z\"."
      )
    },
    OtherProperties
  )
})

/** `hubspot.create_deal`: POST /crm/v3/objects/deals. */
export const CreateDeal: Tool.Tool = Tool.make({
  id: "hubspot.create_deal",
  name: "Create a HubSpot deal",
  description: "Creates a deal in the HubSpot CRM. `properties.dealname` is required; dealstage and pipeline " +
    "take internal IDs (the default pipeline is \"default\", with stages such as \"appointmentscheduled\"). " +
    "Returns { id, properties, createdAt, updatedAt }. Does not associate contacts or companies.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: HUBSPOT_HOSTS,
  input: CreateDealInput,
  output: CrmObject,
  run: (input, ctx) =>
    callHubSpot("hubspot.create_deal", ctx, "POST", "/crm/v3/objects/deals", {
      properties: toStrings(input.properties)
    }).pipe(Effect.flatMap(shape("hubspot.create_deal")))
})

/** The HubSpot tools. */
export const tools: ReadonlyArray<Tool.Tool> = [CreateContact, UpdateContact, CreateDeal]
