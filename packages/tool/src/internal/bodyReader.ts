import type { Readable } from "node:stream"
import { Transform, Writable } from "node:stream"
import { pipeline } from "node:stream/promises"
import * as zlib from "node:zlib"
import { BadResponse, TooLarge } from "./failures.js"

const decoderFor = (encoding: string): Transform => {
  switch (encoding) {
    case "gzip":
    case "x-gzip":
      // Lenient like browsers: a truncated trailer is not worth failing the call.
      return zlib.createGunzip({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
    case "deflate":
      return zlib.createInflate({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
    case "br":
      return zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH })
    default:
      throw new BadResponse(`unsupported content-encoding ${encoding}`)
  }
}

const counter = (max: number) => {
  let seen = 0
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length
      if (seen > max) callback(new TooLarge())
      else callback(null, chunk)
    }
  })
}

/**
 * An unencoded body, read chunk by chunk and dropped as soon as it passes `max` (the common case, kept cheap:
 * plain listeners rather than an async iterator, which costs promises per chunk on every call).
 */
const readPlain = (body: Readable, max: number) =>
  new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let total = 0
    body.on("data", (chunk: Buffer) => {
      total += chunk.length
      if (total > max) {
        body.destroy()
        reject(new TooLarge())
      } else {
        chunks.push(chunk)
      }
    })
    body.once("end", () => resolve(Buffer.concat(chunks, total)))
    body.once("error", reject)
  })

/**
 * Streams the body through the decoders, failing as soon as either the wire bytes or the decoded bytes pass `max`;
 * backpressure keeps a decompression bomb from inflating more than a chunk ahead of the cap.
 */
export const readBody = async (body: Readable, encodings: ReadonlyArray<string>, max: number, signal: AbortSignal) => {
  if (encodings.length === 0) return readPlain(body, max)
  let decoders: Array<Transform>
  try {
    decoders = encodings.slice().reverse().map(decoderFor)
  } catch (error) {
    body.destroy()
    throw error
  }
  let decodeFailed = false
  for (const decoder of decoders) decoder.once("error", () => (decodeFailed = true))
  const chunks: Array<Buffer> = []
  let total = 0
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      total += chunk.length
      if (total > max) return callback(new TooLarge())
      chunks.push(chunk)
      callback()
    }
  })
  try {
    await pipeline([body, counter(max), ...decoders, sink], { signal })
  } catch (error) {
    if (decodeFailed && !(error instanceof TooLarge)) throw new BadResponse("the body could not be decompressed")
    throw error
  }
  return Buffer.concat(chunks, total)
}
