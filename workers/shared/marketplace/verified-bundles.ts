import { and, eq } from "drizzle-orm";
import type { Database } from "../db/client";
import { capsuleVersions } from "../db/schema";
import { fromBase64, sha256Hex } from "../encoding";
import { AppError } from "../errors";
import { importPublicKeyPem, verifyDer } from "../signing/keys";
import { findKey } from "../signing/registry";
import { publishedKeys, readObject } from "../storage/bundles";

/** The recorded facts a published bundle is checked against. */
export interface PublishedRecord {
  name: string;
  version: string;
  sha256: string;
  keyid: string;
  signature: string;
}

const publicKeys = new Map<string, Promise<CryptoKey>>();

async function publicKeyFor(db: Database, keyid: string): Promise<CryptoKey> {
  let key = publicKeys.get(keyid);
  if (!key) {
    key = findKey(db, keyid).then((row) => {
      if (!row) throw new AppError("INTEGRITY_CHECK_FAILED", `Signing key ${keyid} is not registered`);
      return importPublicKeyPem(row.publicPem);
    });
    publicKeys.set(keyid, key);
    key.catch(() => publicKeys.delete(keyid));
  }
  return key;
}

/** Reads a published bundle and checks its bytes against the recorded digest and the platform signature. */
export async function loadVerifiedBundle(
  env: { BUNDLES: R2Bucket },
  db: Database,
  record: PublishedRecord,
): Promise<Uint8Array> {
  const label = `${record.name}@${record.version}`;
  const bytes = await readObject(env.BUNDLES, publishedKeys(record.name, record.version).bundle);
  if (!bytes) throw new AppError("INTEGRITY_CHECK_FAILED", `The bundle of ${label} is missing from storage`);
  if ((await sha256Hex(bytes)) !== record.sha256) {
    throw new AppError("INTEGRITY_CHECK_FAILED", `The bundle of ${label} does not match its recorded sha256`);
  }
  const ok = await verifyDer(await publicKeyFor(db, record.keyid), bytes, fromBase64(record.signature));
  if (!ok) throw new AppError("INTEGRITY_CHECK_FAILED", `The signature of ${label} does not verify`);
  return bytes;
}

/** Looks up a published version's record and loads its verified bundle. */
export async function loadPublishedBundle(
  env: { BUNDLES: R2Bucket },
  db: Database,
  name: string,
  version: string,
): Promise<{ bytes: Uint8Array; record: PublishedRecord }> {
  const [record] = await db
    .select({
      name: capsuleVersions.name,
      version: capsuleVersions.version,
      sha256: capsuleVersions.sha256,
      keyid: capsuleVersions.keyid,
      signature: capsuleVersions.signature,
    })
    .from(capsuleVersions)
    .where(and(eq(capsuleVersions.name, name), eq(capsuleVersions.version, version)))
    .limit(1);
  if (!record) throw new AppError("NOT_FOUND", `No version ${name}@${version}`);
  return { bytes: await loadVerifiedBundle(env, db, record), record };
}
