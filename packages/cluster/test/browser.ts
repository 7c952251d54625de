import { existsSync } from "node:fs"
import { chromium } from "playwright-core"

export const chromiumPath = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium"

/**
 * Whether the browser tests run: Chromium is there, or they are required (`.ci/run` installs it and sets
 * `REQUIRE_CHROMIUM=1`, so a missing browser fails CI instead of skipping). On a machine without it, `npm test` skips
 * them and says so.
 */
export const browserTests = existsSync(chromiumPath) || process.env["REQUIRE_CHROMIUM"] === "1"
if (!browserTests) console.warn(`[browser tests skipped] no Chromium at ${chromiumPath}: apt-get install chromium`)

/**
 * Debian's headless Chromium (`apt-get install chromium`; `.ci/run` installs it), driven by playwright-core, without its
 * calls home: this machine refuses them, and a test must not depend on them.
 */
export const launchChromium = () =>
  chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync"
    ]
  })
