/** A loopback JWKS endpoint that counts what it receives, and signing keys and tokens, for the auth tests. */
import * as jose from "jose"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"

export const issuer = "https://idp.test"
export const audience = "altan-test"
export const now = () => Math.floor(Date.now() / 1000)

export interface KeyServer {
  readonly url: URL
  readonly requests: () => number
  readonly publish: (keys: ReadonlyArray<jose.JWK>) => void
  /** Answer every request with `status` (and `headers`) instead of the set; `undefined` serves the set again. */
  readonly failWith: (status: number | undefined, headers?: Record<string, string>) => void
  /** Send the set in chunks without a `content-length`. */
  readonly chunked: (on: boolean) => void
  readonly close: () => Promise<void>
}

const listen = (server: Server) =>
  new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)))

export const startKeyServer = async (keys: ReadonlyArray<jose.JWK>): Promise<KeyServer> => {
  let published = keys
  let status: number | undefined
  let failHeaders: Record<string, string> = {}
  let inChunks = false
  let requests = 0
  const server = createServer((req, res) => {
    requests++
    if (status !== undefined || req.url !== "/jwks.json") {
      res.writeHead(status ?? 404, status === undefined ? {} : failHeaders).end()
      return
    }
    const body = JSON.stringify({ keys: published })
    if (inChunks) {
      res.writeHead(200, { "content-type": "application/jwk-set+json" })
      const half = Math.floor(body.length / 2)
      res.write(body.slice(0, half))
      res.end(body.slice(half))
      return
    }
    res.writeHead(200, { "content-type": "application/jwk-set+json" }).end(body)
  })
  const port = await listen(server)
  return {
    url: new URL(`http://127.0.0.1:${port}/jwks.json`),
    requests: () => requests,
    publish: (keys) => {
      published = keys
    },
    failWith: (s, headers = {}) => {
      status = s
      failHeaders = headers
    },
    chunked: (on) => {
      inChunks = on
    },
    close: () => new Promise((resolve) => server.close(() => resolve()))
  }
}

export interface SigningKey {
  readonly alg: string
  readonly kid: string
  readonly privateKey: jose.CryptoKey
  readonly publicKey: jose.CryptoKey
  readonly jwk: jose.JWK
  readonly pem: string
}

export const makeKey = async (alg: string, kid: string): Promise<SigningKey> => {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true })
  const jwk = { ...(await jose.exportJWK(publicKey)), kid, alg, use: "sig" }
  return { alg, kid, privateKey, publicKey, jwk, pem: await jose.exportSPKI(publicKey) }
}

export interface TokenOptions {
  readonly iss?: string
  readonly aud?: string
  /** Seconds since the epoch; `null` leaves the claim out. */
  readonly exp?: number | null
  readonly nbf?: number
  /** Seconds since the epoch (default now); `null` leaves the claim out. */
  readonly iat?: number | null
  readonly header?: Record<string, unknown>
}

/** A token for tenant `acme`, user `user-1`; `claims` overrides (an `undefined` claim is left out). */
export const sign = (key: SigningKey, claims: Record<string, unknown> = {}, options: TokenOptions = {}) => {
  const jwt = new jose.SignJWT({ tenant_id: "acme", sub: "user-1", ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...options.header })
    .setIssuer(options.iss ?? issuer)
    .setAudience(options.aud ?? audience)
  if (options.iat !== null) jwt.setIssuedAt(options.iat)
  if (options.exp !== null) jwt.setExpirationTime(options.exp ?? now() + 600)
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf)
  return jwt.sign(key.privateKey)
}
