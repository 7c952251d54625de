import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import type { HostRule } from "../src/EgressPolicy.js"
import { addressProblem, allowRules, checkAddresses, checkUrl, parseHostRule } from "../src/EgressPolicy.js"
import { installConnectTripwire } from "./connectTripwire.js"

// The policy decides without the network; the tripwire makes sure nothing here leaves the machine.
let tripwire: ReturnType<typeof installConnectTripwire>
beforeAll(() => {
  tripwire = installConnectTripwire()
})
afterAll(() => {
  tripwire.restore()
  expect(tripwire.refused).toEqual([])
})

const rules = (...entries: Array<string>): Array<HostRule> => entries.map((entry) => parseHostRule(entry)!)

/** The message the URL is refused with, or `allowed` (with the address to resolve, if it names one). */
const verdict = (url: string, allowHosts: Array<string> | "any-public", operator: Array<string> = []) =>
  Either.match(checkUrl(url, allowRules(allowHosts), rules(...operator)), {
    onLeft: (denied) => denied.message,
    onRight: (destination) => `allowed ${destination.literal ?? destination.host}`
  })

describe("EgressPolicy", () => {
  it("parses allowlist entries as request URLs are normalised, and rejects malformed ones", () => {
    expect(parseHostRule("Example.COM")).toEqual({ host: "example.com", port: undefined, subdomains: false })
    expect(parseHostRule(" api.example.com:8443 ")).toEqual({ host: "api.example.com", port: 8443, subdomains: false })
    expect(parseHostRule("*.example.com")).toEqual({ host: "example.com", port: undefined, subdomains: true })
    expect(parseHostRule("127.1")).toEqual({ host: "127.0.0.1", port: undefined, subdomains: false })
    expect(parseHostRule("example.com.")).toEqual({ host: "example.com", port: undefined, subdomains: false })
    expect(parseHostRule("::1")).toEqual({ host: "[::1]", port: undefined, subdomains: false })
    expect(parseHostRule("[::1]:8080")).toEqual({ host: "[::1]", port: 8080, subdomains: false })
    for (const malformed of ["", "http://x/y", "user@host", "host:0", "host:70000", "host:port", "*.10.0.0.1"]) {
      expect(parseHostRule(malformed), malformed).toBeUndefined()
    }
  })

  it("lets a tenant reach exactly the hosts (and ports) of its allowlist", () => {
    const allow = ["api.example.com", "hooks.example.org:8443", "*.crm.example", "not a rule"]
    expect(verdict("https://api.example.com/v1", allow)).toBe("allowed api.example.com")
    expect(verdict("https://API.Example.com./v1", allow)).toBe("allowed api.example.com")
    expect(verdict("https://hooks.example.org:8443/x", allow)).toBe("allowed hooks.example.org")
    expect(verdict("https://eu.crm.example/x", allow)).toBe("allowed eu.crm.example")
    expect(verdict("https://hooks.example.org/x", allow)).toBe("hooks.example.org is not in the allowed hosts")
    expect(verdict("https://crm.example/x", allow)).toBe("crm.example is not in the allowed hosts")
    expect(verdict("https://api.example.com.evil.test/", allow)).toBe(
      "api.example.com.evil.test is not in the allowed hosts"
    )
    expect(verdict("https://example.com/", [])).toBe("example.com is not in the allowed hosts")
    expect(verdict("https://example.com/", "any-public")).toBe("allowed example.com")
  })

  it("refuses other schemes, userinfo and internal names before any allowlist", () => {
    expect(verdict("ftp://api.example.com/", "any-public")).toBe("ftp: URLs are not allowed (only http and https)")
    expect(verdict("https://u:p@api.example.com/", ["api.example.com"])).toBe(
      "URLs with userinfo are not allowed (host api.example.com)"
    )
    expect(verdict("https://billing.internal/", "any-public")).toBe("billing.internal is an internal name")
    expect(verdict("no url", "any-public")).toBe("invalid URL")
    // the operator may vouch for an internal name (a local fake)
    expect(verdict("http://billing.internal:8080/", [], ["billing.internal:8080"])).toBe("allowed billing.internal")
  })

  it("refuses cloud metadata names whoever allows them, and the metadata address by its range", () => {
    for (const name of ["metadata.google.internal", "metadata", "instance-data.ec2.internal"]) {
      expect(verdict(`http://${name}/computeMetadata/v1/`, [name], [name])).toBe(`${name} is a cloud metadata endpoint`)
    }
    expect(verdict("http://169.254.169.254/latest/meta-data/", "any-public")).toBe("allowed 169.254.169.254")
    expect(addressProblem("169.254.169.254")).toBe("link-local")
    expect(addressProblem("fd00:ec2::254")).toBe("unique-local (fc00::/7)")
  })

  it("names what is wrong with private, special and mapped addresses, and passes public ones", () => {
    const problems: Record<string, string | undefined> = {
      "10.0.0.1": "private",
      "172.16.0.1": "private",
      "172.31.255.255": "private",
      "172.32.0.1": undefined,
      "192.168.1.1": "private",
      "127.0.0.1": "loopback",
      "0.0.0.0": "unspecified",
      "100.64.0.1": "carrier-grade NAT (100.64.0.0/10)",
      "100.63.255.255": undefined,
      "224.0.0.1": "multicast",
      "255.255.255.255": "broadcast",
      "240.0.0.1": "reserved",
      "8.8.8.8": undefined,
      "::1": "loopback",
      "::": "unspecified",
      "fe80::1": "link-local",
      "fc00::1": "unique-local (fc00::/7)",
      "fec0::1": "site-local (fec0::/10)",
      "2002:a00:1::1": "6to4 (may embed a private IPv4 address)",
      "64:ff9b::a00:1": "NAT64 (RFC 6052)",
      // IPv4-compatible ::127.0.0.1, as URLs and the resolver write it
      "::7f00:1": "not global unicast",
      "2001:4860:4860::8888": undefined,
      "::ffff:10.0.0.1": "IPv4-mapped 10.0.0.1, which is private",
      "::ffff:7f00:1": "IPv4-mapped 127.0.0.1, which is loopback",
      "::ffff:169.254.169.254": "IPv4-mapped 169.254.169.254, which is link-local",
      "::ffff:8.8.8.8": undefined,
      "example.com": "not an IP address"
    }
    const found = Object.fromEntries(Object.keys(problems).map((address) => [address, addressProblem(address)]))
    expect(found).toEqual(problems)
  })

  it("checks every resolved address: one private address among public ones refuses the name", () => {
    const destination = Either.getOrThrow(checkUrl("https://api.example.com/", "any-public", []))
    expect(destination.literal).toBeUndefined()
    expect(checkAddresses(destination, ["93.184.216.34", "2606:2800:220:1::1"])).toEqual(Either.right("93.184.216.34"))
    const refused = checkAddresses(destination, ["93.184.216.34", "10.1.2.3"])
    // the reason, then how an operator reaches a local service
    expect(Either.isLeft(refused) && refused.left.message.split("; ")[0]).toBe(
      "api.example.com resolves to 10.1.2.3, which is private"
    )
    expect(Either.isLeft(refused) && refused.left.message).toContain("EGRESS_ALLOW_HOSTS")
    const mapped = checkAddresses(destination, ["::ffff:127.0.0.1"])
    expect(Either.isLeft(mapped) && mapped.left.message.split("; ")[0]).toBe(
      "api.example.com resolves to ::ffff:127.0.0.1, which is IPv4-mapped 127.0.0.1, which is loopback"
    )
  })

  it("refuses an IP literal by its range, even when the tenant lists it; only the operator's rule reaches it", () => {
    const literal = (url: string, allowHosts: Array<string> | "any-public", operator: Array<string> = []) => {
      const destination = checkUrl(url, allowRules(allowHosts), rules(...operator))
      if (Either.isLeft(destination)) return destination.left.message
      const address = checkAddresses(destination.right, [destination.right.literal!])
      return Either.isLeft(address) ? address.left.message.split("; ")[0] : `allowed ${address.right}`
    }
    expect(literal("http://127.0.0.1:8080/", ["127.0.0.1:8080"])).toBe("127.0.0.1 is loopback")
    expect(literal("http://2130706433:8080/", "any-public")).toBe("127.0.0.1 is loopback")
    expect(literal("http://[::ffff:10.0.0.1]/", "any-public")).toBe(
      "[::ffff:a00:1] is IPv4-mapped 10.0.0.1, which is private"
    )
    expect(literal("http://10.0.0.1/", "any-public")).toBe("10.0.0.1 is private")
    expect(literal("http://127.0.0.1:8080/", [], ["127.0.0.1:8080"])).toBe("allowed 127.0.0.1")
    expect(literal("http://127.0.0.1:8081/", [], ["127.0.0.1:8080"])).toBe("127.0.0.1:8081 is not in the allowed hosts")
    expect(literal("http://8.8.8.8/", "any-public")).toBe("allowed 8.8.8.8")
  })
})
