import { chromium } from "playwright-core"

/**
 * Debian's headless Chromium (`apt-get install chromium`; `.ci/run` installs it), driven by playwright-core, without its
 * calls home: this machine refuses them, and a test must not depend on them.
 */
export const launchChromium = () =>
  chromium.launch({
    executablePath: process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium",
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
