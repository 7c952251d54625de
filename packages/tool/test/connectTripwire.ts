import * as net from "node:net"

const loopback = (host: string) =>
  host === "localhost" || host === "::1" || host.startsWith("127.") || host.startsWith("::ffff:127.")

/**
 * Watches every TCP connect of this process while installed: one to an address other than loopback is refused
 * (its socket fails) and recorded, so a test that must stay on this machine can assert that nothing tried to leave.
 */
export const installConnectTripwire = () => {
  const attempts: Array<string> = []
  const refused: Array<string> = []
  const original = net.Socket.prototype.connect
  net.Socket.prototype.connect = function(this: net.Socket, ...args: Array<any>) {
    // node's own callers pass one normalised [options, listener] array; others pass (options | port, host?, ...)
    const first = Array.isArray(args[0]) ? args[0][0] : args[0]
    const options = typeof first === "object" && first !== null ? first : { port: first, host: args[1] }
    if (options.path === undefined) {
      const host = typeof options.host === "string" ? options.host : "localhost"
      attempts.push(`${host}:${options.port}`)
      if (!loopback(host)) {
        refused.push(`${host}:${options.port}`)
        process.nextTick(() => this.destroy(new Error(`connect tripwire: ${host} is not loopback`)))
        return this
      }
    }
    return (original as (...args: Array<any>) => net.Socket).apply(this, args)
  } as typeof original
  return {
    /** `host:port` of every TCP connect attempted since installed. */
    attempts,
    /** Those that were not to loopback, and were refused. */
    refused,
    restore: () => {
      net.Socket.prototype.connect = original
    }
  }
}
