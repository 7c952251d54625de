import { envelopeOf } from "@altan/domain/Errors"
import { createServer, type Server } from "node:http"

/**
 * The public API's Node HTTP server. Requests Node refuses before any handler runs (headers over its 16 KiB limit,
 * e.g. a 100 KiB token; malformed HTTP) still get the API's JSON error envelope, written on the raw socket.
 */
export const make = (): Server => {
  const server = createServer()
  server.on("clientError", (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy()
    const [status, body] = error.code === "HPE_HEADER_OVERFLOW"
      ? [
        431,
        envelopeOf({
          code: "headers_too_large",
          message: "the request headers (a token included) are over the 16 KiB limit"
        })
      ]
      : [400, envelopeOf({ code: "bad_request", message: "malformed HTTP request" })]
    const text = JSON.stringify(body)
    socket.end(
      `HTTP/1.1 ${status} ${status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
        `content-type: application/json\r\ncontent-length: ${
          Buffer.byteLength(text)
        }\r\nconnection: close\r\n\r\n${text}`
    )
  })
  return server
}
