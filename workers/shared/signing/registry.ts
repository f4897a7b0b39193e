import { and, asc, eq, isNull, ne } from "drizzle-orm";
import type { Database } from "../db/client";
import { nowIso } from "../db/client";
import { signingKeys } from "../db/schema";
import type { SigningKey } from "./keys";

export type KeyPurpose = "capsules" | "auth";

const registered = new Set<string>();

/**
 * Records the current key's public half so it stays listed (and old signatures verifiable) after rotation.
 * When a new key of the same purpose appears, earlier ones get an expiry: no new signatures after that time.
 */
export async function ensureKeyRegistered(db: Database, key: SigningKey, purpose: KeyPurpose): Promise<void> {
  if (registered.has(key.keyid)) return;
  const now = nowIso();
  await db.batch([
    db
      .insert(signingKeys)
      .values({
        keyid: key.keyid,
        purpose,
        publicPem: key.publicPem,
        publicJwk: key.publicJwk,
        createdAt: now,
        expiresAt: null,
      })
      .onConflictDoNothing(),
    db
      .update(signingKeys)
      .set({ expiresAt: now })
      .where(
        and(
          eq(signingKeys.purpose, purpose),
          ne(signingKeys.keyid, key.keyid),
          isNull(signingKeys.expiresAt),
        ),
      ),
  ]);
  registered.add(key.keyid);
}

/** Every key of a purpose, current and retired, oldest first. */
export function listKeys(db: Database, purpose: KeyPurpose) {
  return db
    .select()
    .from(signingKeys)
    .where(eq(signingKeys.purpose, purpose))
    .orderBy(asc(signingKeys.createdAt));
}

export async function findKey(db: Database, keyid: string) {
  const [row] = await db.select().from(signingKeys).where(eq(signingKeys.keyid, keyid)).limit(1);
  return row ?? null;
}
