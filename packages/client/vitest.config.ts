import { defineProject, mergeConfig } from "vitest/config"
import { shared } from "../../vitest.shared.js"

export default mergeConfig(
  shared,
  defineProject({
    // one file after another: both build the package first, and each starts processes of its own
    test: { name: "client", poolOptions: { forks: { singleFork: true } } }
  })
)
