import { buildConnector, Pool } from "undici"
import { isIpHost, stripDot } from "../EgressPolicy.js"

// Pools kept for reuse; each connects only to its one checked address.
const maxPools = 256

/**
 * Connection pools keyed by origin and checked address. A pool's connector ignores DNS and dials the pinned
 * address, while TLS still sends SNI and verifies the certificate for the URL's hostname.
 */
export const makePools = (connectTimeoutMs: number) => {
  const connector = buildConnector({ timeout: connectTimeoutMs })
  const pools = new Map<string, Pool>()
  const get = (url: URL, address: string): Pool => {
    const key = `${url.origin} ${address}`
    const cached = pools.get(key)
    if (cached !== undefined && !cached.closed && !cached.destroyed) {
      pools.delete(key)
      pools.set(key, cached)
      return cached
    }
    const hostname = stripDot(url.hostname)
    const servername = isIpHost(hostname) ? undefined : hostname
    const pool = new Pool(url.origin, {
      connect: (options, callback) =>
        connector({ ...options, hostname: address, ...(servername ? { servername } : {}) }, callback)
    })
    pools.set(key, pool)
    if (pools.size > maxPools) {
      const [oldestKey, oldest] = pools.entries().next().value!
      pools.delete(oldestKey)
      // close() lets requests already queued on it finish.
      oldest.close().catch(() => undefined)
    }
    return pool
  }
  const destroyAll = () => Promise.allSettled([...pools.values()].map((pool) => pool.destroy()))
  return { get, destroyAll }
}
