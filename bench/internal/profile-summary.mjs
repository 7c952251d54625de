// Reads a V8 .cpuprofile (node --cpu-prof) and prints where the CPU went after the first 30% of samples (start-up
// and warm-up): by kind of work (the innermost frame that says what it is), then the top functions by self time.
// Usage: node bench/internal/profile-summary.mjs <file.cpuprofile> [top]
import { readFileSync } from "node:fs"

const profile = JSON.parse(readFileSync(process.argv[2], "utf8"))
const top = Number(process.argv[3] ?? 25)
const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const kinds = [
  ["schema (effect/Schema encode, decode, validate)", /ParseResult|esm\/Schema\.js|SchemaAST/],
  ["spans", /NativeSpan|useSpan|withSpan|unsafeMakeSpan|makeSpan|withParentSpan/],
  ["load generator (undici fetch)", /undici/],
  [
    "HTTP server (@effect/platform, node:http)",
    /platform-node|platform\/dist\/esm\/(Http|internal\/http)|_http_|node:http/
  ],
  ["cluster and RPC (@effect/cluster, @effect/rpc)", /@effect\/cluster|@effect\/rpc/],
  ["message storage (memory)", /storage\/(dist|src)/],
  ["audit (hash chain, redaction, sink)", /audit\/(dist|src)/],
  ["our code (agent, integrator, tool, domain)", /packages\/(agent|integrator|tool|domain|redis|observability)\//]
]
const label = (cf) =>
  `${cf.functionName || "(anonymous)"} ${cf.url.replace(/.*\/(packages|node_modules)\//, "")}:${cf.lineNumber + 1}`
const start = Math.floor(profile.samples.length * 0.3)
let total = 0
const byKind = new Map()
const bySelf = new Map()
for (let i = start; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i]
  total += dt
  const leaf = nodes.get(profile.samples[i]).callFrame
  bySelf.set(label(leaf), (bySelf.get(label(leaf)) ?? 0) + dt)
  let kind = "effect runtime and node internals"
  if (leaf.functionName === "(garbage collector)") kind = "garbage collection"
  else if (leaf.functionName === "(idle)") kind = "idle"
  else {
    for (let id = profile.samples[i]; id !== undefined; id = parent.get(id)) {
      const cf = nodes.get(id).callFrame
      const found = kinds.find(([, re]) => re.test(`${cf.functionName} ${cf.url}`))
      if (found) {
        kind = found[0]
        break
      }
    }
  }
  byKind.set(kind, (byKind.get(kind) ?? 0) + dt)
}
const show = (map, n) =>
  [...map].sort((a, b) => b[1] - a[1]).slice(0, n)
    .forEach(([k, t]) => console.log(`${(t / total * 100).toFixed(1).padStart(5)}%  ${k}`))
console.log(`${(total / 1000).toFixed(0)} ms of samples, by kind of work:`)
show(byKind, 20)
console.log(`\ntop ${top} functions by self time:`)
show(bySelf, top)
