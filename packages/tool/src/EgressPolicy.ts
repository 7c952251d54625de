import { EgressDenied } from "@altan/domain/Egress"
import * as Either from "effect/Either"
import type * as IpAddr from "ipaddr.js"
import { createRequire } from "node:module"
import * as net from "node:net"
import { defaultPort, safeUrl } from "./internal/url.js"

// ipaddr.js is CommonJS with `export =`, which cannot be default-imported without allowSyntheticDefaultImports.
const ipaddr: typeof IpAddr = createRequire(import.meta.url)("ipaddr.js")

// ---------------------------------------------------------------------------------------------------------------
// Host rules

/** One entry of an allowlist (the operator's or a tenant's), parsed. */
export interface HostRule {
  /** As the WHATWG URL parser writes it (lower case, punycode, dotted-quad, `[v6]`), without a trailing dot. */
  readonly host: string
  readonly port: number | undefined
  readonly subdomains: boolean
}

export const stripDot = (host: string) => (host.endsWith(".") ? host.slice(0, -1) : host)

export const isIpHost = (host: string) => host.startsWith("[") || net.isIPv4(host)

/** `host`, `host:port`, `[v6]:port`, bare v6 or `*.domain[:port]`; undefined when malformed. */
export const parseHostRule = (entry: string): HostRule | undefined => {
  let s = entry.trim().toLowerCase()
  const subdomains = s.startsWith("*.")
  if (subdomains) s = s.slice(2)
  let host = s
  let portText: string | undefined
  const bracketed = /^(\[[^\]]+\])(?::(\d+))?$/.exec(s)
  if (bracketed) {
    host = bracketed[1]!
    portText = bracketed[2]
  } else if (net.isIPv6(s)) {
    host = `[${s}]`
  } else if (s.includes(":")) {
    const i = s.lastIndexOf(":")
    host = s.slice(0, i)
    portText = s.slice(i + 1)
  }
  if (host === "" || /[/?#@\\\s]/.test(host)) return undefined
  if (portText !== undefined && !/^\d{1,5}$/.test(portText)) return undefined
  const port = portText === undefined ? undefined : Number(portText)
  if (port !== undefined && (port < 1 || port > 65535)) return undefined
  let normalized: string
  try {
    // Normalised exactly as request URLs are, so `127.1` and `127.0.0.1` are one rule.
    const parsed = new URL(`http://${host}/`)
    if (parsed.port !== "" || parsed.username !== "" || parsed.pathname !== "/") return undefined
    normalized = stripDot(parsed.hostname)
  } catch {
    return undefined
  }
  if (normalized === "" || (subdomains && isIpHost(normalized))) return undefined
  return { host: normalized, port, subdomains }
}

// Tenants' allowlists and vendor host lists repeat on every call; parse each entry once.
const parsedRules = new Map<string, HostRule | undefined>()
const cachedRule = (entry: string): HostRule | undefined => {
  if (parsedRules.has(entry)) return parsedRules.get(entry)
  const rule = parseHostRule(entry)
  if (parsedRules.size >= 10_000) parsedRules.clear()
  parsedRules.set(entry, rule)
  return rule
}

/** A request's `allowHosts` as rules; an entry that does not parse matches nothing. */
export const allowRules = (
  allowHosts: ReadonlyArray<string> | "any-public"
): ReadonlyArray<HostRule> | "any-public" =>
  allowHosts === "any-public" ? "any-public" : allowHosts.flatMap((entry) => cachedRule(entry) ?? [])

export const ruleMatches = (rule: HostRule, host: string, port: number) =>
  (rule.port === undefined || rule.port === port) &&
  (rule.subdomains ? host.endsWith(`.${rule.host}`) : host === rule.host)

// Cloud metadata services answer with credentials; no allowlist reaches them.
const metadataNames = new Set(["metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"])

// ---------------------------------------------------------------------------------------------------------------
// Addresses

const v4Reasons: Record<string, string> = {
  unspecified: "unspecified",
  broadcast: "broadcast",
  multicast: "multicast",
  linkLocal: "link-local",
  loopback: "loopback",
  carrierGradeNat: "carrier-grade NAT (100.64.0.0/10)",
  private: "private",
  reserved: "reserved",
  as112: "reserved (AS112)",
  amt: "reserved (AMT)"
}

const v6Reasons: Record<string, string> = {
  unspecified: "unspecified",
  linkLocal: "link-local",
  multicast: "multicast",
  loopback: "loopback",
  uniqueLocal: "unique-local (fc00::/7)",
  deprecatedSiteLocal: "site-local (fec0::/10)",
  discard: "a discard prefix",
  rfc6145: "IPv4-translated (RFC 6145)",
  rfc6052: "NAT64 (RFC 6052)",
  "6to4": "6to4 (may embed a private IPv4 address)",
  teredo: "Teredo (may embed a private IPv4 address)",
  reserved: "reserved"
}

/** Why the address must not be reached, or undefined for a public unicast address. */
export const addressProblem = (address: string): string | undefined => {
  let ip: IpAddr.IPv4 | IpAddr.IPv6
  try {
    ip = ipaddr.parse(address)
  } catch {
    return "not an IP address"
  }
  if (ip instanceof ipaddr.IPv6) {
    if (ip.isIPv4MappedAddress()) {
      const v4 = ip.toIPv4Address()
      const inner = addressProblem(v4.toString())
      return inner === undefined ? undefined : `IPv4-mapped ${v4.toString()}, which is ${inner}`
    }
    const range = ip.range()
    if (range !== "unicast") return v6Reasons[range] ?? `special-purpose (${range})`
    // Only 2000::/3 is allocated as global unicast; the rest (e.g. IPv4-compatible ::a.b.c.d) is not reachable.
    if ((ip.parts[0]! & 0xe000) !== 0x2000) return "not global unicast"
    return undefined
  }
  const range = ip.range()
  return range === "unicast" ? undefined : v4Reasons[range] ?? `special-purpose (${range})`
}

// ---------------------------------------------------------------------------------------------------------------
// Destinations

/** A URL that passed every check that needs no network. */
export interface Destination {
  readonly url: URL
  /** The URL's hostname without a trailing dot. */
  readonly host: string
  /** The address the host names when it is an IP literal; otherwise the host is resolved. */
  readonly literal: string | undefined
  /** An operator rule matches: the operator vouches for it, on whatever address. */
  readonly operatorAllowed: boolean
}

/**
 * The checks of one hop that never touch the network, in order: scheme, userinfo, names, allowlists. A tenant's
 * allowlist cannot reach a private address; only the operator's can (local fakes).
 */
export const checkUrl = (
  raw: string | URL,
  allowHosts: ReadonlyArray<HostRule> | "any-public",
  operator: ReadonlyArray<HostRule>
): Either.Either<Destination, EgressDenied> => {
  let url: URL
  try {
    // The WHATWG parser normalises numeric hosts (`2130706433`, `0x7f000001`, `127.1`) to dotted-quad.
    url = new URL(raw)
  } catch {
    return Either.left(new EgressDenied({ message: "invalid URL", url: safeUrl(raw) }))
  }
  const denied = (message: string) => Either.left(new EgressDenied({ message, url: safeUrl(url) }))
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return denied(`${url.protocol} URLs are not allowed (only http and https)`)
  }
  if (url.username !== "" || url.password !== "") {
    return denied(`URLs with userinfo are not allowed (host ${url.hostname})`)
  }
  const host = stripDot(url.hostname)
  const port = defaultPort(url)
  if (host === "") return denied("URL has no host")
  if (metadataNames.has(host)) return denied(`${host} is a cloud metadata endpoint`)
  const operatorAllowed = operator.some((rule) => ruleMatches(rule, host, port))
  if (!operatorAllowed) {
    if (host.endsWith(".internal")) return denied(`${host} is an internal name`)
    if (allowHosts !== "any-public" && !allowHosts.some((rule) => ruleMatches(rule, host, port))) {
      return denied(`${url.host} is not in the allowed hosts`)
    }
  }
  const literal = host.startsWith("[") ? host.slice(1, -1) : net.isIPv4(host) ? host : undefined
  return Either.right({ url, host, literal, operatorAllowed })
}

/** Where a self-hosted service may live (never link-local or metadata): the refusal says how to allow it. */
const localService = /^(?:loopback|private|unique-local)|which is (?:loopback|private)$/

/**
 * The address to connect to (the first), once every address of the destination may be reached: a name with one
 * private address among public ones is refused.
 */
export const checkAddresses = (
  destination: Destination,
  addresses: ReadonlyArray<string>
): Either.Either<string, EgressDenied> => {
  const { host, literal } = destination
  if (!destination.operatorAllowed) {
    for (const address of addresses) {
      const problem = addressProblem(address)
      if (problem !== undefined) {
        const reason = literal !== undefined
          ? `${host} is ${problem}`
          : `${host} resolves to ${address}, which is ${problem}`
        return Either.left(
          new EgressDenied({
            message: localService.test(problem)
              ? `${reason}; a local service (a model server, say) is reached only once the operator lists it in ` +
                `EGRESS_ALLOW_HOSTS (host:port)`
              : reason,
            url: safeUrl(destination.url)
          })
        )
      }
    }
  }
  return Either.right(addresses[0]!)
}
