/**
 * A loopback HTTP server standing for a third-party API with an observable side effect. `POST /effect`
 * with a JSON body `{marker, step, ...}` answers, after a random delay, `200 {ok: true, marker, step, n}`
 * (`n`: how many requests for this marker and step it received so far).
 *
 * Every request is recorded when it ARRIVES, before the delay: a request that reached the vendor counts as
 * applied even if the caller died or gave up before the answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { sleep } from "./harness.js"

export interface VendorRecord {
  readonly seq: number
  readonly at: number
  readonly method: string
  readonly path: string
  readonly marker: string | undefined
  readonly step: string | undefined
  /** The `Idempotency-Key` header, if any. */
  readonly key: string | undefined
  readonly body: unknown
}

/** One marker and step's calls. */
export interface EffectCalls {
  readonly marker: string
  readonly step: string
  /** Calls without an idempotency key. */
  readonly unkeyed: number
  /** Calls per idempotency key. */
  readonly keys: Record<string, number>
}

export interface VendorStats {
  readonly calls: number
  readonly keyedCalls: number
  readonly unkeyedCalls: number
  /** Distinct (marker, step) pairs. */
  readonly pairs: number
  /** Effects applied, if the vendor deduplicates keyed calls: each unkeyed call, plus each distinct key. */
  readonly distinctEffects: number
  /** (marker, step) pairs received more than once WITHOUT an idempotency key: side effects applied twice. */
  readonly duplicatedUnkeyed: number
  /** The extra unkeyed calls of those pairs (calls beyond the first). */
  readonly duplicatedUnkeyedCalls: number
  /** Idempotency keys received more than once (allowed: the vendor would deduplicate them). */
  readonly duplicatedKeyed: number
  readonly duplicatedKeyedCalls: number
  /** (marker, step) pairs that received more than one distinct idempotency key: two different effects. */
  readonly multipleKeys: number
  /** Every (marker, step) with any repetition, for failure messages. */
  readonly repeated: ReadonlyArray<EffectCalls>
}

/** An answer other than the default 200 (e.g. to inject vendor faults); `undefined` keeps the default. */
export type Respond = (
  record: VendorRecord
) => { readonly status: number; readonly body?: unknown; readonly headers?: Record<string, string> } | undefined

export interface VendorOptions {
  /** Random answer delay bounds (default 300-1000 ms). */
  readonly minDelayMs?: number
  readonly maxDelayMs?: number
  readonly respond?: Respond
}

export interface Vendor {
  readonly port: number
  /** `127.0.0.1:<port>`, for `egress_allowlist` and `EGRESS_ALLOW_HOSTS`. */
  readonly host: string
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly records: ReadonlyArray<VendorRecord>
  setDelay(minMs: number, maxMs: number): void
  setRespond(respond: Respond | undefined): void
  /** Calls received for (marker, step), keyed or not. */
  calls(marker: string, step: string): number
  /** Distinct idempotency keys received for (marker, step). */
  keys(marker: string, step: string): ReadonlySet<string>
  /** Whether any call carried this marker. */
  saw(marker: string): boolean
  stats(filter?: (record: VendorRecord) => boolean): VendorStats
  /** Requests still waiting for their answer. */
  readonly inFlight: number
  /** Time of the last request that arrived (0 if none). */
  readonly lastArrival: number
  /** Waits until no request arrived for `quietMs` and none is in flight, at most `timeoutMs`. */
  waitQuiet(quietMs?: number, timeoutMs?: number): Promise<boolean>
  close(): Promise<void>
}

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString()))
    req.on("error", reject)
  })

const pairKey = (marker: string, step: string) => `${marker}\u0000${step}`

export const startVendor = async (options: VendorOptions = {}): Promise<Vendor> => {
  let minDelay = options.minDelayMs ?? 300
  let maxDelay = options.maxDelayMs ?? 1000
  let respond = options.respond
  const records: Array<VendorRecord> = []
  const byPair = new Map<string, Array<VendorRecord>>()
  const markers = new Set<string>()
  let inFlight = 0
  let lastArrival = 0

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const text = await readBody(req).catch(() => "")
    let body: any
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = undefined
    }
    const path = (req.url ?? "/").split("?")[0]!
    if (req.method !== "POST" || path !== "/effect") {
      res.writeHead(404, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: "not found" }))
      return
    }
    const header = req.headers["idempotency-key"]
    const record: VendorRecord = {
      seq: records.length + 1,
      at: Date.now(),
      method: req.method,
      path,
      marker: typeof body?.marker === "string" ? body.marker : undefined,
      step: typeof body?.step === "string" ? body.step : undefined,
      key: Array.isArray(header) ? header.join(",") : header,
      body
    }
    // recorded at arrival: from here on the effect counts as applied
    records.push(record)
    lastArrival = record.at
    if (record.marker !== undefined) markers.add(record.marker)
    const pair = pairKey(record.marker ?? "", record.step ?? "")
    const list = byPair.get(pair) ?? []
    list.push(record)
    byPair.set(pair, list)
    const n = list.length
    inFlight++
    try {
      await sleep(minDelay + Math.random() * Math.max(0, maxDelay - minDelay))
      if (res.destroyed || res.writableEnded) return
      const custom = respond?.(record)
      const status = custom?.status ?? 200
      res.writeHead(status, { "content-type": "application/json", ...custom?.headers })
      res.end(JSON.stringify(custom?.body ?? { ok: true, marker: record.marker, step: record.step, n }))
    } finally {
      inFlight--
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  })
  await new Promise<void>((resolve, reject) => server.listen(0, "127.0.0.1", resolve).on("error", reject))
  const port = (server.address() as { port: number }).port

  const stats = (filter: (record: VendorRecord) => boolean = () => true): VendorStats => {
    const pairs = new Map<string, { marker: string; step: string; unkeyed: number; keys: Record<string, number> }>()
    let calls = 0
    let keyedCalls = 0
    for (const r of records) {
      if (!filter(r)) continue
      calls++
      const k = pairKey(r.marker ?? "", r.step ?? "")
      const entry = pairs.get(k) ?? { marker: r.marker ?? "", step: r.step ?? "", unkeyed: 0, keys: {} }
      if (r.key === undefined) entry.unkeyed++
      else {
        keyedCalls++
        entry.keys[r.key] = (entry.keys[r.key] ?? 0) + 1
      }
      pairs.set(k, entry)
    }
    let distinctEffects = 0
    let duplicatedUnkeyed = 0
    let duplicatedUnkeyedCalls = 0
    let duplicatedKeyed = 0
    let duplicatedKeyedCalls = 0
    let multipleKeys = 0
    const repeated: Array<EffectCalls> = []
    for (const entry of pairs.values()) {
      const keyCounts = Object.values(entry.keys)
      distinctEffects += entry.unkeyed + keyCounts.length
      if (entry.unkeyed > 1) {
        duplicatedUnkeyed++
        duplicatedUnkeyedCalls += entry.unkeyed - 1
      }
      for (const c of keyCounts) {
        if (c > 1) {
          duplicatedKeyed++
          duplicatedKeyedCalls += c - 1
        }
      }
      if (keyCounts.length > 1) multipleKeys++
      if (entry.unkeyed + keyCounts.reduce((a, b) => a + b, 0) > 1) repeated.push(entry)
    }
    return {
      calls,
      keyedCalls,
      unkeyedCalls: calls - keyedCalls,
      pairs: pairs.size,
      distinctEffects,
      duplicatedUnkeyed,
      duplicatedUnkeyedCalls,
      duplicatedKeyed,
      duplicatedKeyedCalls,
      multipleKeys,
      repeated
    }
  }

  return {
    port,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    records,
    setDelay: (min, max) => {
      minDelay = min
      maxDelay = max
    },
    setRespond: (r) => {
      respond = r
    },
    calls: (marker, step) => byPair.get(pairKey(marker, step))?.length ?? 0,
    keys: (marker, step) =>
      new Set((byPair.get(pairKey(marker, step)) ?? []).flatMap((r) => (r.key === undefined ? [] : [r.key]))),
    saw: (marker) => markers.has(marker),
    stats,
    get inFlight() {
      return inFlight
    },
    get lastArrival() {
      return lastArrival
    },
    waitQuiet: async (quietMs = 2_000, timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline) {
        if (inFlight === 0 && Date.now() - lastArrival >= quietMs) return true
        await sleep(100)
      }
      return false
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
