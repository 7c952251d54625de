/** The URL without userinfo, query or fragment: safe for errors and logs. */
export const safeUrl = (raw: string | URL): string => {
  try {
    const url = new URL(raw)
    url.username = ""
    url.password = ""
    url.search = ""
    url.hash = ""
    return url.href
  } catch {
    return String(raw).split(/[?#]/)[0]!.replace(/\/\/[^/@]*@/, "//")
  }
}

export const hostOf = (raw: string): string => {
  try {
    return new URL(raw).host
  } catch {
    return "invalid-url"
  }
}

export const defaultPort = (url: URL) => (url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80)
