#!/usr/bin/env node
/**
 * `altan`: the command line of the Altan API (`altan --help`). Reads `ALTAN_URL` and `ALTAN_TOKEN`.
 */
import { run } from "../Cli.js"

// a reader that went away (`altan tools list | head`) ends the command quietly
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(process.exitCode ?? 0)
    throw error
  })
}

process.exitCode = await run(process.argv.slice(2), process.env)
