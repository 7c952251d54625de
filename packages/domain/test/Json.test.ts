import { describe, expect, it } from "@effect/vitest"
import { canonicalJson } from "../src/Json.js"

describe("canonicalJson", () => {
  it("sorts keys by UTF-16 code units at every depth, without whitespace", () => {
    expect(canonicalJson({ b: 1, a: { d: [], c: {} }, "10": 0, "9": 0, B: 0 })).toBe(
      `{"10":0,"9":0,"B":0,"a":{"c":{},"d":[]},"b":1}`
    )
    // an astral character (a surrogate pair, 0xD83D...) sorts before U+FF00 by code units, after it by code points
    expect(canonicalJson({ "\uff00": 1, "😀": 2 })).toBe(`{"😀":2,"\uff00":1}`)
  })

  it("writes strings and numbers as JSON.stringify does, and drops what JSON cannot hold like it", () => {
    expect(canonicalJson({ s: "a\"b\\\n\u0001é", n: [1e21, -0, 0.1, -1.5e-7] })).toBe(
      `{"n":[1e+21,0,0.1,-1.5e-7],"s":"a\\"b\\\\\\n\\u0001é"}`
    )
    expect(canonicalJson({ u: undefined, f: () => 1, k: Symbol("s"), a: [undefined, () => 1, null] })).toBe(
      `{"a":[null,null,null]}`
    )
    expect(canonicalJson(null)).toBe("null")
    expect(canonicalJson(undefined)).toBe("null")
    expect(canonicalJson([])).toBe("[]")
    expect(canonicalJson({ x: undefined })).toBe("{}")
  })

  it("gives the same text for the same data whatever the key order it was built in", () => {
    const a = { tenant_id: "t", details: { status: 200, method: "GET", tool: "w" }, seq: 3 }
    const b = JSON.parse(JSON.stringify({ seq: 3, details: { tool: "w", method: "GET", status: 200 }, tenant_id: "t" }))
    expect(canonicalJson(a)).toBe(canonicalJson(b))
    expect(canonicalJson(a)).toBe(`{"details":{"method":"GET","status":200,"tool":"w"},"seq":3,"tenant_id":"t"}`)
  })
})
