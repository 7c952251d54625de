import type { ChatMessage } from "@altan/domain/Llm"
import { describe, expect, it } from "@effect/vitest"
import { toolResult, trimHistory } from "../src/Conversation.js"

const exchange = (n: number, size: number): Array<ChatMessage> => [
  { role: "user", content: `question ${n} ${"x".repeat(size)}` },
  { role: "assistant", content: null, tool_calls: [{ id: `c${n}`, name: "json.extract", arguments: { path: "a" } }] },
  { role: "tool", tool_call_id: `c${n}`, content: `{"output":${n}}` },
  { role: "assistant", content: `answer ${n}` }
]

describe("history trimming", () => {
  it("keeps everything under the budget", () => {
    const history = [...exchange(1, 10), ...exchange(2, 10)]
    expect(trimHistory(history, 10_000)).toEqual(history)
  })

  it("drops the oldest exchanges first and never cuts one in half", () => {
    const history = [...exchange(1, 500), ...exchange(2, 500), ...exchange(3, 500)]
    const kept = trimHistory(history, 1_300)
    expect(kept[0]).toMatchObject({ role: "user", content: expect.stringContaining("question 2") })
    expect(kept).toEqual(history.slice(4))
    // every tool result still follows the call it answers
    const ids = new Set(
      kept.flatMap((m) => (m.role === "assistant" && m.tool_calls ? m.tool_calls.map((c) => c.id) : []))
    )
    for (const m of kept) if (m.role === "tool") expect(ids.has(m.tool_call_id)).toBe(true)
  })

  it("keeps nothing rather than a partial exchange when even the last one is too big", () => {
    expect(trimHistory(exchange(1, 5_000), 100)).toEqual([])
  })

  it("cuts long tool results and says so", () => {
    const text = toolResult({ data: "y".repeat(100) }, 40)
    expect(text.length).toBeLessThan(90)
    expect(text).toContain("[truncated")
    expect(toolResult({ a: 1 }, 40)).toBe(`{"a":1}`)
  })
})
