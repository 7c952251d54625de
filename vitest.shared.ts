import type { ViteUserConfig } from "vitest/config"

/** Shared by every package: workspace imports resolve to TypeScript sources. */
export const shared: ViteUserConfig = {
  resolve: { conditions: ["@altan/source"] },
  ssr: { resolve: { conditions: ["@altan/source"] } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
}
