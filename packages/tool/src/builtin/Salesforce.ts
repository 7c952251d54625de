import type { EgressMethod } from "@altan/domain/Egress"
import { ToolFailed } from "@altan/domain/ToolWorker"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Tool from "../Tool.js"
import { isRecord } from "./internal.js"
import { answeredHttp, baseUrlOf, checkedSegment, colonDetail, decodeVendor, vendorCall } from "./Vendor.js"

const PROVIDER = "salesforce"
const API = "/services/data/v60.0"
/** Salesforce org instance hosts (My Domain and legacy pod hosts); the org's own URL comes from settings. */
export const SALESFORCE_HOSTS: ReadonlyArray<string> = ["*.my.salesforce.com", "*.salesforce.com"]

/** `ERROR_CODE: message (fields: …)` for each entry of Salesforce's error array. */
const describeErrors = (body: unknown): string | undefined => {
  if (!Array.isArray(body)) return undefined
  const parts = body.filter(isRecord).map((e) => {
    const code = typeof e["errorCode"] === "string" ? `${e["errorCode"]}: ` : ""
    const message = typeof e["message"] === "string" ? e["message"] : ""
    const fields = Array.isArray(e["fields"]) && e["fields"].length > 0 ? ` (fields: ${e["fields"].join(", ")})` : ""
    return `${code}${message}${fields}`
  })
  return parts.length === 0 ? undefined : parts.join("; ")
}

/**
 * One REST call against the org's instance URL (settings, never guessed) with the tenant's credential;
 * non-2xx answers fail with Salesforce's error codes and messages.
 */
const callSalesforce = (toolId: string, ctx: Tool.ToolContext, method: EgressMethod, path: string, body?: unknown) =>
  vendorCall({
    toolId,
    provider: PROVIDER,
    ctx,
    url: Effect.suspend(() => {
      const base = baseUrlOf(ctx, PROVIDER, "")
      return base === ""
        ? Effect.fail(
          new ToolFailed({
            tool_id: toolId,
            message: `${toolId}: no Salesforce instance URL for this tenant: an admin must set ` +
              "settings.providers.salesforce.base_url to the org's URL, e.g. https://yourorg.my.salesforce.com",
            retryable: false
          })
        )
        : Effect.succeed(`${base}${path}`)
    }),
    method,
    ...(body !== undefined ? { json: body } : {}),
    contentType: "application/json",
    onError: answeredHttp("Salesforce", colonDetail(describeErrors))
  })

const shape = <A, I>(toolId: string, schema: Schema.Schema<A, I>) =>
  decodeVendor(toolId, schema, "unexpected Salesforce answer")

const RecordId = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$/))

const FieldValue = Schema.Union(Schema.String, Schema.Number, Schema.Boolean, Schema.Null)

const OtherFields = Schema.Record({
  key: Schema.String.pipe(Schema.pattern(/^[A-Za-z][A-Za-z0-9_]*$/)),
  value: FieldValue
})
  .annotations({
    description:
      "Any other field by its API name, including custom fields, e.g. \"Industry\", \"Rating\", \"Region__c\"."
  })

const optional = <A, I>(schema: Schema.Schema<A, I>, description: string) =>
  Schema.optionalWith(schema.annotations({ description }), { exact: true })

// Creation takes strings; an update also takes null, which clears the field.
const leadFields = <A, I>(text: Schema.Schema<A, I>) => ({
  FirstName: optional(text, "First name."),
  Email: optional(text, "Email address."),
  Phone: optional(text, "Phone number."),
  Title: optional(text, "Job title."),
  Status: optional(text, "Lead status picklist value, e.g. \"Open - Not Contacted\"."),
  LeadSource: optional(text, "Lead source picklist value, e.g. \"Web\"."),
  Description: optional(text, "Free text.")
})

/** The answer to a record creation. */
export const CreateOutput = Schema.Struct({
  id: Schema.String.annotations({ description: "The new record's 18-character ID." }),
  success: Schema.Boolean
})

// ---------------------------------------------------------------------------------------------------------------
// salesforce.create_lead

/** Input of `salesforce.create_lead`: Lead fields by API name. */
export const CreateLeadInput = Schema.Struct(
  {
    LastName: Schema.String.pipe(Schema.minLength(1)).annotations({ description: "Last name (required)." }),
    Company: Schema.String.pipe(Schema.minLength(1)).annotations({ description: "Company name (required)." }),
    ...leadFields(Schema.String)
  },
  OtherFields
)

/** `salesforce.create_lead`: POST /services/data/v60.0/sobjects/Lead/. */
export const CreateLead: Tool.Tool = Tool.make({
  id: "salesforce.create_lead",
  name: "Create a Salesforce lead",
  description: "Creates a Lead in the connected Salesforce org. Fields use Salesforce API names: LastName and " +
    "Company are required; FirstName, Email, Phone, Title, Status, LeadSource, Description and any other " +
    "field (custom fields end in __c) are optional. Returns { id, success }. Fails with the Salesforce error " +
    "code, e.g. REQUIRED_FIELD_MISSING, INVALID_FIELD, DUPLICATES_DETECTED.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: SALESFORCE_HOSTS,
  input: CreateLeadInput,
  output: CreateOutput,
  run: (input, ctx) =>
    callSalesforce("salesforce.create_lead", ctx, "POST", `${API}/sobjects/Lead/`, input).pipe(
      Effect.flatMap(shape("salesforce.create_lead", CreateOutput))
    )
})

// ---------------------------------------------------------------------------------------------------------------
// salesforce.update_lead

/** Input of `salesforce.update_lead`. */
export const UpdateLeadInput = Schema.Struct({
  id: RecordId.annotations({ description: "The Lead's 15- or 18-character ID, e.g. \"00Q5e00000AbCdEFGH\"." }),
  fields: Schema.Struct(
    {
      LastName: optional(Schema.String, "Last name."),
      Company: optional(Schema.String, "Company name."),
      ...leadFields(Schema.NullOr(Schema.String))
    },
    OtherFields
  ).pipe(
    Schema.filter((f) => Object.keys(f).length > 0 || "set at least one field", { jsonSchema: { minProperties: 1 } })
  ).annotations({ description: "Only the fields to change, by API name; null clears a field." })
})

/** Output of `salesforce.update_lead`. */
export const UpdateLeadOutput = Schema.Struct({
  id: Schema.String,
  updated: Schema.Boolean
})

/** `salesforce.update_lead`: PATCH /services/data/v60.0/sobjects/Lead/{id}. */
export const UpdateLead: Tool.Tool = Tool.make({
  id: "salesforce.update_lead",
  name: "Update a Salesforce lead",
  description: "Updates fields of an existing Lead in the connected Salesforce org, by its ID. Only the given " +
    "fields change (API names; null clears a field). Returns { id, updated: true }. Fails with HTTP 404 " +
    "NOT_FOUND when no such lead exists.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  idempotent: true,
  hosts: SALESFORCE_HOSTS,
  input: UpdateLeadInput,
  output: UpdateLeadOutput,
  run: (input, ctx) =>
    Effect.gen(function*() {
      const id = yield* checkedSegment("salesforce.update_lead", input.id)
      // Salesforce answers 204 No Content on success.
      yield* callSalesforce("salesforce.update_lead", ctx, "PATCH", `${API}/sobjects/Lead/${id}`, input.fields)
      return { id: input.id, updated: true }
    })
})

// ---------------------------------------------------------------------------------------------------------------
// salesforce.create_opportunity

/** Input of `salesforce.create_opportunity`: Opportunity fields by API name. */
export const CreateOpportunityInput = Schema.Struct(
  {
    Name: Schema.String.pipe(Schema.minLength(1)).annotations({ description: "The opportunity's name." }),
    StageName: Schema.String.pipe(Schema.minLength(1)).annotations({
      description: "Stage picklist value, e.g. \"Prospecting\", \"Qualification\", \"Closed Won\"."
    }),
    CloseDate: Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}$/)).annotations({
      description: "Expected close date, YYYY-MM-DD."
    }),
    Amount: optional(Schema.Number, "The amount in the org's currency."),
    AccountId: optional(RecordId, "The ID of the Account (001…) the opportunity belongs to."),
    Probability: optional(Schema.Number.pipe(Schema.between(0, 100)), "Probability in percent, 0-100."),
    LeadSource: optional(Schema.String, "Lead source picklist value."),
    Description: optional(Schema.String, "Free text.")
  },
  OtherFields
)

/** `salesforce.create_opportunity`: POST /services/data/v60.0/sobjects/Opportunity/. */
export const CreateOpportunity: Tool.Tool = Tool.make({
  id: "salesforce.create_opportunity",
  name: "Create a Salesforce opportunity",
  description: "Creates an Opportunity in the connected Salesforce org. Name, StageName (a stage picklist " +
    "value such as \"Prospecting\") and CloseDate (YYYY-MM-DD) are required; Amount, AccountId and other " +
    "fields by API name are optional. Returns { id, success }. Fails with the Salesforce error code, e.g. " +
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST for an unknown stage.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: true,
  hosts: SALESFORCE_HOSTS,
  input: CreateOpportunityInput,
  output: CreateOutput,
  run: (input, ctx) =>
    callSalesforce("salesforce.create_opportunity", ctx, "POST", `${API}/sobjects/Opportunity/`, input).pipe(
      Effect.flatMap(shape("salesforce.create_opportunity", CreateOutput))
    )
})

// ---------------------------------------------------------------------------------------------------------------
// salesforce.query

const NextRecordsUrl = Schema.String.pipe(Schema.pattern(/^\/services\/data\/v\d+\.\d+\/query\/[A-Za-z0-9-]+$/))

/** Input of `salesforce.query`: a SOQL query, or the `nextRecordsUrl` of a previous page. */
export const QueryInput = Schema.Union(
  Schema.Struct({
    q: Schema.String.pipe(Schema.minLength(1)).annotations({
      description: "The SOQL query, e.g. \"SELECT Id, Name, Email FROM Lead WHERE Company = 'Acme' LIMIT 10\"."
    })
  }),
  Schema.Struct({
    nextRecordsUrl: NextRecordsUrl.annotations({
      description: "The `nextRecordsUrl` of a previous answer, to read the next page."
    })
  })
)

/** Output of `salesforce.query`. */
export const QueryOutput = Schema.Struct({
  totalSize: Schema.Number.annotations({ description: "How many records match in total." }),
  done: Schema.Boolean.annotations({ description: "false when more pages remain." }),
  records: Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown })).annotations({
    description: "The records with the selected fields (plus Salesforce's `attributes`)."
  }),
  nextRecordsUrl: Schema.optionalWith(Schema.String, { exact: true }).annotations({
    description: "Present when done is false: pass it as `nextRecordsUrl` to read the next page."
  })
})

/** `salesforce.query`: GET /services/data/v60.0/query?q=. */
export const Query: Tool.Tool = Tool.make({
  id: "salesforce.query",
  name: "Query Salesforce (SOQL)",
  description: "Runs a read-only SOQL query in the connected Salesforce org, e.g. \"SELECT Id, Name, " +
    "StageName FROM Opportunity WHERE CloseDate = THIS_QUARTER LIMIT 50\". Returns { totalSize, done, " +
    "records, nextRecordsUrl }; when done is false, call again with { nextRecordsUrl } for the next page " +
    "(use LIMIT to keep answers small). Fails with the Salesforce error code, e.g. MALFORMED_QUERY, " +
    "INVALID_FIELD, INVALID_TYPE.",
  provider: PROVIDER,
  needsConnection: true,
  sideEffect: false,
  cacheable: true,
  hosts: SALESFORCE_HOSTS,
  input: QueryInput,
  output: QueryOutput,
  run: (input, ctx) =>
    Effect.gen(function*() {
      // The page URL is a path on the instance: re-checked here, as it is concatenated as is.
      if (!("q" in input) && !Schema.is(NextRecordsUrl)(input.nextRecordsUrl)) {
        return yield* new ToolFailed({
          tool_id: "salesforce.query",
          message: "salesforce.query: nextRecordsUrl must be a /services/data/vXX.X/query/… path",
          retryable: false
        })
      }
      const path = "q" in input ? `${API}/query?q=${encodeURIComponent(input.q)}` : input.nextRecordsUrl
      const answer = yield* callSalesforce("salesforce.query", ctx, "GET", path)
      return yield* shape("salesforce.query", QueryOutput)(answer)
    })
})

/** The Salesforce tools. */
export const tools: ReadonlyArray<Tool.Tool> = [CreateLead, UpdateLead, CreateOpportunity, Query]
