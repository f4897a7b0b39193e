import { sha256Hex, toBase64Url } from "../encoding";

export const API_KEY_PREFIX = "soma_";

/** A new random API key; only its hash is stored. */
export function generateApiKey(): string {
  return `${API_KEY_PREFIX}${toBase64Url(crypto.getRandomValues(new Uint8Array(32)))}`;
}

export function hashApiKey(key: string): Promise<string> {
  return sha256Hex(key);
}
