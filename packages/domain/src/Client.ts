import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import { Api } from "./Api.js"

export interface ClientOptions {
  /** Where the API is served, e.g. `http://localhost:8080`. */
  readonly baseUrl: string | URL
  /** The bearer token sent with every request. */
  readonly token: string | Redacted.Redacted<string>
}

/**
 * A typed client of the public HTTP API (`Api`): one method per endpoint, grouped like the API
 * (`client.tasks.create({ payload })`), failing with the API's own error classes. Needs an
 * `HttpClient`, e.g. `FetchHttpClient.layer`.
 */
export const makeClient = (options: ClientOptions) =>
  HttpApiClient.make(Api, {
    baseUrl: options.baseUrl,
    transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(options.token))
  })

/** The typed client of the public HTTP API. */
export type Client = Effect.Effect.Success<ReturnType<typeof makeClient>>

/** The typed client of the public HTTP API as a service. */
export class ApiClient extends Context.Tag("@altan/domain/Client/ApiClient")<ApiClient, Client>() {}

export const layer = (options: ClientOptions): Layer.Layer<ApiClient, never, HttpClient.HttpClient> =>
  Layer.effect(ApiClient, makeClient(options))
