import { toHex, utf8 } from "../encoding";

/** The header that signs every webhook delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export const SIGNATURE_HEADER = "Soma-Signature";

/** A fresh random secret: a recognisable prefix and 32 random bytes in hex. */
export function generateSecret(prefix: "whsec" | "ghsec"): string {
  return `${prefix}_${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
}

function hmacKey(secret: string, usage: "sign" | "verify"): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", utf8(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

/** Lowercase hex HMAC-SHA256 of a message under a secret (the secret's UTF-8 bytes are the key). */
export async function hmacSha256Hex(secret: string, message: string | Uint8Array): Promise<string> {
  const data = typeof message === "string" ? utf8(message) : message;
  const mac = await crypto.subtle.sign(
    "HMAC",
    await hmacKey(secret, "sign"),
    data as Uint8Array<ArrayBuffer>,
  );
  return toHex(new Uint8Array(mac));
}

/** The `Soma-Signature` value for a body sent at `timestamp` (unix seconds). */
export async function signatureHeader(secret: string, body: string, timestamp: number): Promise<string> {
  return `t=${timestamp},v1=${await hmacSha256Hex(secret, `${timestamp}.${body}`)}`;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> | null {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}

/** Checks a hex HMAC-SHA256 of a message in constant time (WebCrypto's verify compares the MACs). */
export async function verifyHmacSha256Hex(
  secret: string,
  message: Uint8Array,
  hex: string,
): Promise<boolean> {
  const mac = fromHex(hex);
  if (mac?.length !== 32) return false;
  return crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret, "verify"),
    mac,
    message as Uint8Array<ArrayBuffer>,
  );
}
