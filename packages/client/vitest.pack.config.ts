import { fileURLToPath } from "node:url"
import { defineProject } from "vitest/config"
import { shared } from "../../vitest.shared.js"

/** `npm run client:pack-check` (after it built the packages): `test/Pack.check.ts`, which `npm test` does not run. */
export default defineProject({
  ...shared,
  root: fileURLToPath(new URL(".", import.meta.url)),
  test: { ...shared.test, name: "client-pack", include: ["test/Pack.check.ts"], testTimeout: 60_000 }
})
