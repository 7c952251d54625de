import type * as jose from "jose"
import { KeyObject } from "node:crypto"

/** Asymmetric algorithms only: an HS256 token "signed" with the public key must never verify. */
export const algorithms: ReadonlyArray<string> = ["RS256", "PS256", "ES256", "EdDSA"]

/** The algorithms a key can verify, within `algorithms`; empty for any other key (symmetric, P-384, short RSA...). */
export const algorithmsOf = (key: KeyObject | jose.CryptoKey): ReadonlyArray<string> => {
  if (key instanceof KeyObject) {
    if (key.type !== "public" && key.type !== "private") return []
    const details = key.asymmetricKeyDetails ?? {}
    switch (key.asymmetricKeyType) {
      case "rsa":
        return (details.modulusLength ?? 0) >= 2048 ? ["RS256", "PS256"] : []
      case "rsa-pss":
        return (details.modulusLength ?? 0) >= 2048 ? ["PS256"] : []
      case "ec":
        return details.namedCurve === "prime256v1" ? ["ES256"] : []
      case "ed25519":
        return ["EdDSA"]
      default:
        return []
    }
  }
  const algorithm = key.algorithm as { readonly name: string; readonly namedCurve?: string }
  switch (algorithm.name) {
    case "RSASSA-PKCS1-v1_5":
      return ["RS256"]
    case "RSA-PSS":
      return ["PS256"]
    case "ECDSA":
      return algorithm.namedCurve === "P-256" ? ["ES256"] : []
    case "Ed25519":
      return ["EdDSA"]
    default:
      return []
  }
}
