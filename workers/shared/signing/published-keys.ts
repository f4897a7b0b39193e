import type { Database } from "../db/client";
import { loadSigningKey, type SigningKey } from "./keys";
import { ensureKeyRegistered, listKeys } from "./registry";

/** An npm-style registry key entry: `expires` is null while current, then the time it stopped signing. */
export interface PublishedKey {
  keyid: string;
  keytype: "ecdsa-sha2-nistp256";
  scheme: "ecdsa-sha2-nistp256";
  key: string;
  pem: string;
  created: string;
  expires: string | null;
}

/** The current capsule-signing key and every earlier one, so signatures verify across rotation. */
export async function publishedSigningKeys(
  env: { CAPSULE_SIGNING_KEY: string },
  db: Database,
): Promise<{ current: SigningKey; keys: PublishedKey[] }> {
  const current = await loadSigningKey(env.CAPSULE_SIGNING_KEY);
  await ensureKeyRegistered(db, current, "capsules");
  const rows = await listKeys(db, "capsules");
  return {
    current,
    keys: rows.map((row) => ({
      keyid: row.keyid,
      keytype: "ecdsa-sha2-nistp256",
      scheme: "ecdsa-sha2-nistp256",
      key: row.publicPem.replace(/-----(BEGIN|END) PUBLIC KEY-----|\s+/g, ""),
      pem: row.publicPem,
      created: row.createdAt,
      expires: row.expiresAt,
    })),
  };
}
