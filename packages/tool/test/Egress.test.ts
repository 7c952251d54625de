import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import * as dns from "node:dns"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as zlib from "node:zlib"
import type { EgressRequest, EgressResponse } from "../src/Egress.js"
import { Egress, EgressDenied, EgressFailed, json, layer, text } from "../src/Egress.js"
import { EgressConfig, type EgressSettings } from "../src/EgressConfig.js"
import { installConnectTripwire } from "./connectTripwire.js"

// Real sockets only: every server listens on 127.0.0.1 and counts the connections it receives; the tripwire refuses
// (and reports) any connection that would leave the machine.

interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

interface TestServer {
  readonly name: string
  readonly port: number
  readonly server: http.Server
  readonly seen: Array<Seen>
  connections: number
}

const MiB = 1024 * 1024

const listen = async (name: string, server: http.Server, seen: Array<Seen> = []): Promise<TestServer> => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  const state: TestServer = { name, port, server, seen, connections: 0 }
  server.on("connection", () => state.connections++)
  return state
}

/** What the 50 MiB endpoint managed to send before the client went away. */
const big = { sent: 0, closed: false }
let bomb: Buffer

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const handler = (name: string, seen: Array<Seen>) => async (req: http.IncomingMessage, res: http.ServerResponse) => {
  const chunks: Array<Buffer> = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  const url = new URL(req.url!, "http://test")
  seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() })
  res.setHeader("x-served-by", name)
  const q = url.searchParams
  switch (url.pathname) {
    case "/redirect":
      res.writeHead(Number(q.get("status") ?? 302), { location: q.get("to")! }).end("moved")
      return
    case "/loop": {
      const n = Number(q.get("n"))
      if (n < Number(q.get("stop"))) {
        res.writeHead(302, { location: `/loop?n=${n + 1}&stop=${q.get("stop")}` }).end()
      } else {
        res.end(`done after ${n}`)
      }
      return
    }
    case "/big": {
      big.sent = 0
      big.closed = false
      res.on("close", () => (big.closed = true))
      res.writeHead(200, { "content-type": "application/octet-stream" })
      const chunk = Buffer.alloc(64 * 1024, 0x61)
      while (big.sent < 50 * MiB && !big.closed) {
        big.sent += chunk.length
        if (!res.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off("drain", done)
              res.off("close", done)
              resolve()
            }
            res.on("drain", done)
            res.on("close", done)
          })
        }
      }
      res.end()
      return
    }
    case "/bomb":
      res.writeHead(200, { "content-encoding": "gzip", "content-length": bomb.length }).end(bomb)
      return
    case "/encoded": {
      const payload = Buffer.from(JSON.stringify({ encoded: q.get("as") }))
      const as = q.get("as")!
      const encoded = as === "gzip"
        ? zlib.gzipSync(payload)
        : as === "deflate"
        ? zlib.deflateSync(payload)
        : zlib.brotliCompressSync(payload)
      res.writeHead(200, { "content-encoding": as, "content-type": "application/json" }).end(encoded)
      return
    }
    case "/slow": {
      const timer = setTimeout(() => res.end("late"), 3000)
      res.on("close", () => clearTimeout(timer))
      return
    }
    case "/slow-body": {
      res.writeHead(200)
      const timer = setInterval(() => res.write("."), 50)
      res.on("close", () => clearInterval(timer))
      return
    }
    case "/status":
      res.writeHead(Number(q.get("code")), { "content-type": "text/plain" }).end("teapot")
      return
    default:
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(seen.at(-1)))
  }
}

const makeServer = (name: string) => {
  const seen: Array<Seen> = []
  return listen(name, http.createServer(handler(name, seen)), seen)
}

let first: TestServer
let second: TestServer
let unlisted: TestServer
const servers = () => [first, second, unlisted]
const connections = () => servers().reduce((n, s) => n + s.connections, 0)

let tripwire: ReturnType<typeof installConnectTripwire>

beforeAll(async () => {
  tripwire = installConnectTripwire()
  bomb = zlib.gzipSync(Buffer.alloc(100 * MiB), { level: 9 })
  first = await makeServer("first")
  second = await makeServer("second")
  unlisted = await makeServer("unlisted")
})

afterAll(async () => {
  for (const s of servers()) {
    s.server.closeAllConnections()
    await new Promise((resolve) => s.server.close(resolve))
  }
  tripwire.restore()
  expect(tripwire.refused).toEqual([])
})

/** The guard with the first and second servers vouched for by the operator; the third is never allowed. */
const provideEgress = (settings: Partial<EgressSettings> = {}) =>
  Effect.provide(
    layer.pipe(
      Layer.provide(EgressConfig.layer({
        operatorAllowHosts: [`127.0.0.1:${first.port}`, `127.0.0.1:${second.port}`],
        ...settings
      }))
    )
  )

const send = (req: EgressRequest, settings?: Partial<EgressSettings>) =>
  Effect.flatMap(Egress, (egress) => egress.request(req)).pipe(provideEgress(settings))

const get = (url: string, extra: Partial<EgressRequest> = {}, settings?: Partial<EgressSettings>) =>
  send({ url, method: "GET", allowHosts: "any-public", ...extra }, settings)

/**
 * The failure of a call that must fail. A success becomes a plain defect: vitest hangs reporting a test that
 * failed with an object holding a Uint8Array, which is what `Effect.flip` of a response would give it.
 */
const failure = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<E> =>
  Effect.flatMap(Effect.either(effect), (result) =>
    Either.isLeft(result)
      ? Effect.succeed(result.left)
      : Effect.dieMessage("expected the call to fail, but it succeeded"))

const seenBy = (response: EgressResponse) => JSON.parse(text(response)) as Seen

describe("Egress", () => {
  it.live("refuses every private, special or malformed destination without connecting anywhere", () =>
    Effect.gen(function*() {
      const u = unlisted.port
      const cases: Array<[url: string, allowHosts: EgressRequest["allowHosts"], message: string]> = [
        [`http://127.0.0.1:${u}/`, "any-public", "127.0.0.1 is loopback"],
        [`http://127.1:${u}/`, "any-public", "127.0.0.1 is loopback"],
        [`http://0:${u}/`, "any-public", "0.0.0.0 is unspecified"],
        [`http://0.0.0.0:${u}/`, "any-public", "0.0.0.0 is unspecified"],
        [`http://2130706433:${u}/`, "any-public", "127.0.0.1 is loopback"],
        [`http://0x7f000001:${u}/`, "any-public", "127.0.0.1 is loopback"],
        [`http://017700000001:${u}/`, "any-public", "127.0.0.1 is loopback"],
        [`http://[::1]:${u}/`, "any-public", "[::1] is loopback"],
        [`http://[::ffff:7f00:1]:${u}/`, "any-public", "IPv4-mapped 127.0.0.1, which is loopback"],
        [`http://[::ffff:169.254.169.254]/`, "any-public", "IPv4-mapped 169.254.169.254, which is link-local"],
        [`http://[::127.0.0.1]:${u}/`, "any-public", "not global unicast"],
        [`http://[64:ff9b::a00:1]/`, "any-public", "NAT64"],
        [`http://169.254.169.254/latest/meta-data/?token=s3cret`, "any-public", "169.254.169.254 is link-local"],
        [`http://metadata.google.internal/computeMetadata/v1/`, "any-public", "cloud metadata endpoint"],
        [`http://metadata.google.internal./`, ["metadata.google.internal"], "cloud metadata endpoint"],
        [`http://10.0.0.1/`, "any-public", "10.0.0.1 is private"],
        [`http://172.16.0.1/`, "any-public", "172.16.0.1 is private"],
        [`http://192.168.1.1/`, "any-public", "192.168.1.1 is private"],
        [`http://100.64.0.1/`, "any-public", "100.64.0.1 is carrier-grade NAT"],
        [`http://224.0.0.1/`, "any-public", "224.0.0.1 is multicast"],
        [`http://255.255.255.255/`, "any-public", "255.255.255.255 is broadcast"],
        [`http://240.0.0.1/`, "any-public", "240.0.0.1 is reserved"],
        [`http://[fc00::1]/`, "any-public", "[fc00::1] is unique-local"],
        [`http://[fe80::1]/`, "any-public", "[fe80::1] is link-local"],
        [`http://localhost:${u}/`, "any-public", "localhost resolves to 127.0.0.1, which is loopback"],
        [`http://LOCALHOST.:${u}/`, "any-public", "localhost resolves to 127.0.0.1, which is loopback"],
        // The tenant's allowlist cannot unlock private addresses; only the operator's can.
        [`http://127.0.0.1:${u}/`, [`127.0.0.1:${u}`], "127.0.0.1 is loopback"],
        ["file:///etc/passwd", "any-public", "file: URLs are not allowed"],
        ["gopher://x/", "any-public", "gopher: URLs are not allowed"],
        ["data:text/plain,hi", "any-public", "data: URLs are not allowed"],
        ["not a url", "any-public", "invalid URL"],
        ["http://allowed.com@evil.test/", ["allowed.com"], "userinfo"],
        ["http://user:pw@allowed.com/", ["allowed.com"], "userinfo"],
        ["http://allowed.com.evil.example/", ["allowed.com"], "allowed.com.evil.example is not in the allowed hosts"],
        ["http://other.example/", ["allowed.com"], "other.example is not in the allowed hosts"],
        ["http://allowed.com:8443/", ["allowed.com:443"], "allowed.com:8443 is not in the allowed hosts"],
        ["http://example.com/", ["*.example.com"], "example.com is not in the allowed hosts"],
        ["http://example.com.evil.test/", ["*.example.com"], "is not in the allowed hosts"],
        ["http://service.internal/", "any-public", "service.internal is an internal name"],
        [`http://127.0.0.1:${u}/`, [], "127.0.0.1:" + u + " is not in the allowed hosts"]
      ]
      const before = connections()
      const wrong: Array<string> = []
      for (const [url, allowHosts, message] of cases) {
        const result = yield* Effect.either(get(url, { allowHosts, headers: { authorization: "Bearer s3cret" } }))
        const error = Either.isLeft(result) ? result.left : undefined
        const ok = error instanceof EgressDenied && error.code === "egress_denied" && error.message.includes(message) &&
          !JSON.stringify(error).includes("s3cret") && !error.url.includes("?") && !error.url.includes("@")
        if (!ok) wrong.push(`${url}: ${error ? `${error._tag}: ${error.message} (${error.url})` : "allowed"}`)
      }
      expect(wrong).toEqual([])
      expect(connections() - before).toBe(0)
      // a local service's refusal says how an operator allows it; metadata's never does
      const local = yield* Effect.flip(get(`http://127.0.0.1:${u}/`, { allowHosts: "any-public" }))
      expect(local.message).toContain("EGRESS_ALLOW_HOSTS")
      const lan = yield* Effect.flip(get("http://10.0.0.1/", { allowHosts: "any-public" }))
      expect(lan.message).toContain("EGRESS_ALLOW_HOSTS")
      const metadata = yield* Effect.flip(get("http://169.254.169.254/", { allowHosts: "any-public" }))
      expect(metadata.message).not.toContain("EGRESS_ALLOW_HOSTS")
      expect(connections() - before).toBe(0)
    }))

  it.live("round-trips GET and POST with headers, status and body", () =>
    Effect.gen(function*() {
      const base = `http://127.0.0.1:${first.port}`
      const got = yield* get(`${base}/echo?x=1`, { headers: { "X-Test": "yes", Host: "evil.test" } })
      expect(got.status).toBe(200)
      expect(got.url).toBe(`${base}/echo?x=1`)
      expect(got.headers["x-served-by"]).toBe("first")
      const seen = seenBy(got)
      expect(seen).toMatchObject({ method: "GET", url: "/echo?x=1", headers: { "x-test": "yes" } })
      // The caller cannot redirect the pinned connection to another virtual host.
      expect(seen.headers.host).toBe(`127.0.0.1:${first.port}`)

      const posted = yield* send({
        url: `${base}/echo`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ hello: "world" }),
        allowHosts: []
      })
      expect(yield* json(posted)).toMatchObject({ method: "POST", body: "{\"hello\":\"world\"}" })

      const bytes = yield* send({
        url: `${base}/echo`,
        method: "PUT",
        body: new TextEncoder().encode("raw"),
        allowHosts: "any-public"
      })
      expect(seenBy(bytes)).toMatchObject({ method: "PUT", body: "raw" })

      const teapot = yield* get(`${base}/status?code=418`)
      expect(teapot.status).toBe(418)
      expect(text(teapot)).toBe("teapot")

      const notJson = yield* failure(json(teapot))
      expect(notJson.reason).toBe("bad_response")
    }))

  it.live("decodes gzip, deflate and br bodies", () =>
    Effect.gen(function*() {
      for (const as of ["gzip", "deflate", "br"]) {
        const response = yield* get(`http://127.0.0.1:${first.port}/encoded?as=${as}`)
        expect(yield* json(response)).toEqual({ encoded: as })
        expect(response.headers["content-encoding"]).toBeUndefined()
      }
    }))

  it.live("lets the operator's host:port through, and no other port of the same address", () =>
    Effect.gen(function*() {
      const before = unlisted.connections
      const allowed = yield* get(`http://127.0.0.1:${first.port}/echo`, { allowHosts: ["example.com"] })
      expect(allowed.status).toBe(200)
      // The operator's entry matches the normalised host, whatever form the URL used.
      const odd = yield* get(`http://2130706433:${first.port}/echo`, { allowHosts: [] })
      expect(odd.status).toBe(200)
      const denied = yield* failure(get(`http://127.0.0.1:${unlisted.port}/`))
      expect(denied).toBeInstanceOf(EgressDenied)
      expect(unlisted.connections).toBe(before)
    }))

  it.live("pins a resolved hostname to the checked address, keeping the Host header", () =>
    Effect.gen(function*() {
      const addresses = yield* Effect.promise(() => dns.promises.lookup("localhost", { all: true, verbatim: true }))
      if (addresses[0]?.address !== "127.0.0.1") return
      const response = yield* get(`http://localhost:${first.port}/echo`, {}, {
        operatorAllowHosts: [`localhost:${first.port}`]
      })
      expect(seenBy(response).headers.host).toBe(`localhost:${first.port}`)
    }))

  it.live("reuses one pinned connection for sequential calls and keeps concurrent calls apart", () =>
    Effect.gen(function*() {
      const firstBefore = first.connections
      const secondBefore = second.connections
      const start = Date.now()
      yield* Effect.gen(function*() {
        const egress = yield* Egress
        for (let i = 0; i < 50; i++) {
          yield* egress.request({ url: `http://127.0.0.1:${first.port}/echo`, method: "GET", allowHosts: "any-public" })
        }
        const results = yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? first : second)),
          (server) =>
            egress.request({ url: `http://127.0.0.1:${server.port}/echo`, method: "GET", allowHosts: "any-public" })
              .pipe(
                Effect.map((response) => [server.name, response.headers["x-served-by"]])
              ),
          { concurrency: "unbounded" }
        )
        for (const [expected, actual] of results) expect(actual).toBe(expected)
      }).pipe(provideEgress())
      expect(Date.now() - start).toBeLessThan(2000)
      // 50 sequential calls on one kept-alive connection; the concurrent burst opens at most 20 per server.
      expect(first.connections - firstBefore).toBeLessThanOrEqual(21)
      expect(second.connections - secondBefore).toBeLessThanOrEqual(20)
      expect(second.connections - secondBefore).toBeGreaterThan(0)
    }))

  it.live("refuses a redirect to the metadata address at the redirect", () =>
    Effect.gen(function*() {
      const before = servers().map((s) => s.connections)
      const to = encodeURIComponent("http://169.254.169.254/latest/meta-data/iam?x=secret")
      const error = yield* failure(get(`http://127.0.0.1:${first.port}/redirect?status=302&to=${to}`))
      expect(error).toBeInstanceOf(EgressDenied)
      expect(error.message).toBe("169.254.169.254 is link-local")
      expect(error.url).toBe("http://169.254.169.254/latest/meta-data/iam")
      expect(servers().map((s, i) => s.connections - before[i]!)).toEqual([1, 0, 0])
    }))

  it.live("refuses a redirect to a host outside the tenant's allowlist or to another scheme", () =>
    Effect.gen(function*() {
      const to = encodeURIComponent("http://elsewhere.example/")
      const error = yield* failure(
        get(`http://127.0.0.1:${first.port}/redirect?to=${to}`, { allowHosts: ["127.0.0.1"] })
      )
      expect(error.message).toBe("elsewhere.example is not in the allowed hosts")
      const file = yield* failure(
        get(`http://127.0.0.1:${first.port}/redirect?to=${encodeURIComponent("file:///etc/passwd")}`)
      )
      expect(file).toBeInstanceOf(EgressDenied)
      const unlistedBefore = unlisted.connections
      const local = yield* failure(
        get(`http://127.0.0.1:${first.port}/redirect?to=${encodeURIComponent(`http://127.0.0.1:${unlisted.port}/`)}`)
      )
      expect(local.message.split("; ")[0]).toBe("127.0.0.1 is loopback")
      expect(unlisted.connections).toBe(unlistedBefore)
    }))

  it.live("drops a caller's own credential header across origins, and can refuse to follow at all", () =>
    Effect.gen(function*() {
      const to = encodeURIComponent(`http://127.0.0.1:${second.port}/echo?hop=2`)
      const moved = yield* send({
        url: `http://127.0.0.1:${first.port}/redirect?status=307&to=${to}`,
        method: "POST",
        headers: { "x-api-key": "k3y-s3cret", "x-keep": "kept" },
        body: "payload",
        allowHosts: "any-public",
        credentialHeaders: ["X-API-Key"]
      })
      const seen = seenBy(moved)
      expect(seen.headers["x-keep"]).toBe("kept")
      expect(seen.headers["x-api-key"]).toBeUndefined()
      const secondBefore = second.connections
      const stayed = yield* send({
        url: `http://127.0.0.1:${first.port}/redirect?status=307&to=${to}`,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "client_secret=s3cret",
        allowHosts: "any-public",
        followRedirects: false
      })
      expect(stayed.status).toBe(307)
      expect(second.connections).toBe(secondBefore)
    }))

  it.live("follows allowed redirects to another server, re-checking and re-pinning each hop", () =>
    Effect.gen(function*() {
      const secondBefore = second.connections
      const to = encodeURIComponent(`http://127.0.0.1:${second.port}/echo?hop=2`)
      const secrets = {
        authorization: "Bearer s3cret",
        cookie: "sid=1",
        "x-keep": "kept",
        "content-type": "text/plain"
      }
      const kept = yield* send({
        url: `http://127.0.0.1:${first.port}/redirect?status=307&to=${to}`,
        method: "POST",
        headers: secrets,
        body: "payload",
        allowHosts: "any-public"
      })
      expect(kept.url).toBe(`http://127.0.0.1:${second.port}/echo?hop=2`)
      expect(kept.headers["x-served-by"]).toBe("second")
      const seen = seenBy(kept)
      expect(seen).toMatchObject({ method: "POST", body: "payload", headers: { "x-keep": "kept" } })
      // Another origin (port): credentials are not forwarded.
      expect(seen.headers.authorization).toBeUndefined()
      expect(seen.headers.cookie).toBeUndefined()
      expect(second.connections - secondBefore).toBe(1)

      const viaSeeOther = yield* send({
        url: `http://127.0.0.1:${first.port}/redirect?status=303&to=${to}`,
        method: "POST",
        headers: secrets,
        body: "payload",
        allowHosts: "any-public"
      })
      expect(seenBy(viaSeeOther)).toMatchObject({ method: "GET", body: "" })
      expect(seenBy(viaSeeOther).headers["content-type"]).toBeUndefined()

      // Same origin: credentials stay; 302 turns POST into GET; 308 keeps it.
      for (const [status, method, body] of [["302", "GET", ""], ["301", "GET", ""], ["308", "POST", "payload"]]) {
        const same = yield* send({
          url: `http://127.0.0.1:${first.port}/redirect?status=${status}&to=/echo`,
          method: "POST",
          headers: secrets,
          body: "payload",
          allowHosts: "any-public"
        })
        expect(seenBy(same), status).toMatchObject({ method, body, headers: { authorization: "Bearer s3cret" } })
      }
    }))

  it.live("follows at most 5 redirects", () =>
    Effect.gen(function*() {
      const five = yield* get(`http://127.0.0.1:${first.port}/loop?n=0&stop=5`)
      expect(text(five)).toBe("done after 5")
      const error = yield* failure(get(`http://127.0.0.1:${first.port}/loop?n=0&stop=6`))
      expect(error).toBeInstanceOf(EgressFailed)
      expect(error).toMatchObject({ reason: "too_many_redirects", retryable: false })
      const fewer = yield* failure(get(`http://127.0.0.1:${first.port}/loop?n=0&stop=2`, {}, { maxRedirects: 1 }))
      expect(fewer).toMatchObject({ reason: "too_many_redirects" })
    }))

  it.live("cuts off a 50 MiB response early and closes the connection", () =>
    Effect.gen(function*() {
      const start = Date.now()
      const error = yield* failure(get(`http://127.0.0.1:${first.port}/big`))
      expect(Date.now() - start).toBeLessThan(2000)
      expect(error).toMatchObject({ _tag: "EgressFailed", reason: "too_large", retryable: false })
      yield* Effect.promise(async () => {
        for (let i = 0; i < 100 && !big.closed; i++) await sleep(10)
      })
      expect(big.closed).toBe(true)
      expect(big.sent).toBeLessThan(50 * MiB)
    }))

  it.live("applies the cap to plain and encoded bodies alike", () =>
    Effect.gen(function*() {
      const error = yield* failure(get(`http://127.0.0.1:${first.port}/encoded?as=gzip`, { maxBytes: 8 }))
      expect(error).toMatchObject({ reason: "too_large" })
      const status = yield* failure(get(`http://127.0.0.1:${first.port}/status?code=200`, { maxBytes: 3 }))
      expect(status).toMatchObject({ reason: "too_large" })
    }))

  it.live("cuts off a gzip bomb by its decompressed size", () =>
    Effect.gen(function*() {
      const start = Date.now()
      const error = yield* failure(get(`http://127.0.0.1:${first.port}/bomb`))
      expect(error).toMatchObject({ reason: "too_large", retryable: false })
      expect(Date.now() - start).toBeLessThan(2000)
      // The compressed body (~100 KB) is under the cap; only the decompressed count can catch it.
      expect(bomb.length).toBeLessThan(MiB)
    }))

  it.live("fails with a timeout when the answer is slower than the total timeout", () =>
    Effect.gen(function*() {
      for (const path of ["/slow", "/slow-body"]) {
        const start = Date.now()
        const error = yield* failure(
          get(`http://127.0.0.1:${first.port}${path}`, { timeoutMs: 300, headers: { authorization: "Bearer s3cret" } })
        )
        const elapsed = Date.now() - start
        expect(error, path).toMatchObject({ _tag: "EgressFailed", reason: "timeout", retryable: true })
        expect(elapsed, path).toBeGreaterThanOrEqual(290)
        expect(elapsed, path).toBeLessThan(1000)
        expect(JSON.stringify(error)).not.toContain("s3cret")
      }
      const configured = yield* failure(
        get(`http://127.0.0.1:${first.port}/slow`, {}, { totalTimeout: Duration.millis(200) })
      )
      expect(configured).toMatchObject({ reason: "timeout" })
    }))

  it.live("refuses a header value undici cannot send, without echoing it", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        get(`http://127.0.0.1:${first.port}/echo`, { headers: { "x-bad": "s3cret\r\ninjected: 1" } })
      )
      expect(error).toMatchObject({ _tag: "EgressFailed", reason: "network", retryable: false })
      expect(JSON.stringify(error)).not.toContain("s3cret")
    }))

  it.live("reports a refused connection as a retryable failure to connect (nothing was sent)", () =>
    Effect.gen(function*() {
      const closed = http.createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve)))
      const port = (closed.address() as AddressInfo).port
      yield* Effect.promise(() => new Promise((resolve) => closed.close(resolve)))
      const error = yield* failure(get(`http://127.0.0.1:${port}/`, {}, { operatorAllowHosts: [`127.0.0.1:${port}`] }))
      expect(error).toMatchObject({ _tag: "EgressFailed", reason: "connect", retryable: true })
      expect(error.message).toContain("ECONNREFUSED")
    }))

  it.live("verifies TLS for the hostname while connecting to the pinned address", () =>
    Effect.gen(function*() {
      const addresses = yield* Effect.promise(() => dns.promises.lookup("localhost", { all: true, verbatim: true }))
      if (addresses[0]?.address !== "127.0.0.1") return
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "egress-tls-"))
      try {
        execFileSync("openssl", [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=DNS:localhost",
          "-days",
          "1",
          "-keyout",
          path.join(dir, "key.pem"),
          "-out",
          path.join(dir, "cert.pem")
        ], { stdio: "ignore" })
      } catch {
        return // no openssl: nothing to serve TLS with
      }
      const names: Array<string> = []
      const server = https.createServer({
        key: fs.readFileSync(path.join(dir, "key.pem")),
        cert: fs.readFileSync(path.join(dir, "cert.pem")),
        SNICallback: (servername, callback) => {
          names.push(servername)
          callback(null)
        }
      }, (_req, res) => res.end("secret page"))
      const tls = yield* Effect.promise(() => listen("tls", server))
      const error = yield* failure(
        get(`https://localhost:${tls.port}/`, {}, { operatorAllowHosts: [`localhost:${tls.port}`] })
      ).pipe(Effect.ensuring(Effect.promise(() => new Promise((resolve) => server.close(resolve)))))
      // The self-signed certificate is not trusted: verification is on, and SNI named the host, not the IP.
      expect(error).toMatchObject({ _tag: "EgressFailed", reason: "network" })
      expect(error.message).toContain("certificate")
      expect(names).toEqual(["localhost"])
      expect(tls.connections).toBe(1)
      fs.rmSync(dir, { recursive: true, force: true })
    }))

  it.live("reads the operator's settings from the environment", () =>
    Effect.gen(function*() {
      const fromEnv = (env: Record<string, string>) =>
        Effect.flatMap(Egress, (egress) =>
          egress.request({ url: `http://127.0.0.1:${first.port}/echo`, method: "GET", allowHosts: [] })).pipe(
            Effect.provide(layer),
            Effect.provide(EgressConfig.layerConfig),
            Effect.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))),
            Effect.exit
          )
      const allowed = yield* fromEnv({ EGRESS_ALLOW_HOSTS: ` example.com, 127.0.0.1:${first.port}` })
      expect(Exit.isSuccess(allowed)).toBe(true)
      const none = yield* fromEnv({})
      expect(Exit.isFailure(none) && JSON.stringify(none.cause)).toContain("EgressDenied")
      const invalid = yield* fromEnv({ EGRESS_ALLOW_HOSTS: "http://x/y" })
      expect(Exit.isFailure(invalid) && JSON.stringify(invalid.cause)).toContain("EGRESS_ALLOW_HOSTS")
    }))
})
