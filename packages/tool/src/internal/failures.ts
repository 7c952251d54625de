import { EgressFailed } from "@altan/domain/Egress"
import { type Deadline, TimedOut } from "./deadline.js"
import { safeUrl } from "./url.js"

/** The body passed its cap (on the wire or decompressed). */
export class TooLarge extends Error {}

/** The response cannot be read (an unknown or broken content encoding). */
export class BadResponse extends Error {}

// No connection was made, so nothing was sent: safe to try again whatever the request does.
const notConnected = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT"
])

const tlsRejections = new Set([
  "CERT_HAS_EXPIRED",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "ERR_TLS_CERT_ALTNAME_INVALID"
])

/** Maps what a hop threw to a typed failure; never includes request headers or bodies. */
export const failureOf = (error: unknown, url: URL, maxBytes: number, deadline: Deadline): EgressFailed => {
  if (error instanceof TimedOut) return deadline.failure()
  const where = { url: safeUrl(url) }
  if (error instanceof TooLarge) {
    return new EgressFailed({
      reason: "too_large",
      retryable: false,
      message: `${url.host} sent more than ${maxBytes} bytes`,
      ...where
    })
  }
  if (error instanceof BadResponse) {
    return new EgressFailed({
      reason: "bad_response",
      retryable: false,
      message: `${url.host}: ${error.message}`,
      ...where
    })
  }
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : undefined
  if (code !== undefined && notConnected.has(code)) {
    return new EgressFailed({
      reason: "connect",
      retryable: true,
      message: `${url.host} could not be reached (${code})`,
      ...where
    })
  }
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return new EgressFailed({
      reason: "timeout",
      retryable: true,
      message: `${url.host} timed out (${code})`,
      ...where
    })
  }
  if (code !== undefined && (code.startsWith("HPE_") || code === "UND_ERR_RES_CONTENT_LENGTH_MISMATCH")) {
    return new EgressFailed({
      reason: "bad_response",
      retryable: false,
      message: `${url.host} sent a malformed response (${code})`,
      ...where
    })
  }
  if (code === "UND_ERR_INVALID_ARG") {
    // A header name or value undici refuses (e.g. a line break); trying again cannot help.
    return new EgressFailed({
      reason: "network",
      retryable: false,
      message: `invalid request to ${url.host}`,
      ...where
    })
  }
  if (code !== undefined && tlsRejections.has(code)) {
    return new EgressFailed({
      reason: "network",
      retryable: true,
      message: `${url.host} presented a certificate that does not verify (${code})`,
      ...where
    })
  }
  return new EgressFailed({
    reason: "network",
    retryable: true,
    message: `request to ${url.host} failed${code ? ` (${code})` : ""}`,
    ...where
  })
}
