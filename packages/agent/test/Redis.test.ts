import { expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redis from "../src/Redis.js"
import { redisLayer } from "./redis.js"

it.live("Redis.layer connects, answers PING and fails clearly on an unreachable server or a bad url", () =>
  Effect.gen(function*() {
    yield* Redis.ping.pipe(Effect.provide(redisLayer()))
    const refused = yield* Layer.build(Redis.layer({ url: "redis://user:secret@127.0.0.1:1" })).pipe(
      Effect.scoped,
      Effect.flip
    )
    expect(refused._tag).toBe("RedisError")
    expect(refused.message).toContain("cannot connect to redis at redis://127.0.0.1:1")
    expect(refused.message).toContain("ECONNREFUSED")
    expect(refused.message).not.toContain("secret")
    const invalid = yield* Layer.build(Redis.layer({ url: "localhost:6379" })).pipe(Effect.scoped, Effect.exit)
    expect(Exit.isFailure(invalid)).toBe(true)
    expect(JSON.stringify(invalid)).toContain("the redis url must be")
  }))
