import { and, eq, inArray, sql } from "drizzle-orm";
import semver from "semver";
import { auditStatement, sealAuditLog } from "../audit/log";
import { type Database, newId, nowIso } from "../db/client";
import { accounts, capsules, capsulesFts, capsuleTags, capsuleVersions, submissions } from "../db/schema";
import { type ParsedBundle, parseBundle } from "../domain/bundle";
import type { CapsuleManifest } from "../domain/manifest";
import { namespaceOf } from "../domain/manifest";
import { priceChange, priceOfManifest } from "../economics/prices";
import { sha256Hex, toBase64, utf8 } from "../encoding";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { createAttestation, IN_TOTO_STATEMENT_TYPE, PUBLISH_PREDICATE_TYPE } from "../signing/attestation";
import { loadSigningKey, signDer } from "../signing/keys";
import { ensureKeyRegistered } from "../signing/registry";
import { buildSbom, CYCLONEDX_MEDIA_TYPE, capsulePurl, type ResolvedDependency } from "../signing/sbom";
import { publishedKeys, readObject } from "../storage/bundles";
import { bundleLimits } from "./limits";
import { forgetRankedSearches } from "./search-memo";
import { pickLatest } from "./versions";

export interface PublishEnv {
  BUNDLES: R2Bucket;
  CAPSULE_SIGNING_KEY: string;
  MAX_BUNDLE_BYTES: string;
  MAX_UNPACKED_BYTES: string;
  MAX_BUNDLE_ENTRIES: string;
}

type SubmissionRow = typeof submissions.$inferSelect;

async function handleOf(db: Database, accountId: string | null): Promise<string> {
  if (!accountId?.startsWith("acc_")) return accountId ?? "unknown";
  const [row] = await db
    .select({ handle: accounts.handle })
    .from(accounts)
    .where(eq(accounts.id, accountId))
    .limit(1);
  return row?.handle ?? accountId;
}

async function resolveForSbom(db: Database, manifest: CapsuleManifest): Promise<ResolvedDependency[]> {
  const deps = Object.entries(manifest.spec.dependencies);
  if (deps.length === 0) return [];
  const rows = await db
    .select({ name: capsuleVersions.name, version: capsuleVersions.version, status: capsuleVersions.status })
    .from(capsuleVersions)
    .where(
      inArray(
        capsuleVersions.name,
        deps.map(([n]) => n),
      ),
    );
  return deps.map(([name, range]) => {
    const candidates = rows.filter((r) => r.name === name && r.status !== "yanked").map((r) => r.version);
    return { name, range, resolvedVersion: semver.maxSatisfying(candidates, range) };
  });
}

/**
 * Publishes an approved submission: signs the exact bundle bytes with the platform key, writes the signature,
 * a CycloneDX SBOM and a Sigstore attestation (covering bundle digest, SBOM digest and the review) to R2, then
 * records the immutable version in one D1 batch. Safe to run again for the same submission.
 */
export async function publishSubmission(
  env: PublishEnv,
  db: Database,
  row: SubmissionRow,
  parsed?: ParsedBundle,
): Promise<void> {
  const [already] = await db
    .select({ id: capsuleVersions.id })
    .from(capsuleVersions)
    .where(eq(capsuleVersions.submissionId, row.id))
    .limit(1);
  if (already) {
    await db.update(submissions).set({ status: "published" }).where(eq(submissions.id, row.id));
    return;
  }
  // Published objects are immutable: a version already published by another submission is never
  // overwritten in R2. This submission is closed instead, so the cron stops retrying it.
  const [taken] = await db
    .select({ submissionId: capsuleVersions.submissionId })
    .from(capsuleVersions)
    .where(and(eq(capsuleVersions.name, row.name), eq(capsuleVersions.version, row.version)))
    .limit(1);
  if (taken) {
    await db
      .update(submissions)
      .set({
        status: "rejected",
        decisionNotes: `${row.name}@${row.version} was already published by submission ${taken.submissionId}`,
      })
      .where(eq(submissions.id, row.id));
    throw new AppError(
      "CONFLICT",
      `${row.name}@${row.version} already exists; versions are never reused, bump the version`,
      { path: "metadata.version" },
    );
  }

  const bytes = await readObject(env.BUNDLES, row.bundleKey);
  if (!bytes || (await sha256Hex(bytes)) !== row.sha256) {
    throw new Error(`submission ${row.id}: stored bundle is missing or does not match its digest`);
  }
  const bundle = parsed ?? (await parseBundle(bytes, bundleLimits(env)));
  const manifest = bundle.manifest;
  const { name, version } = manifest.metadata;
  const key = await loadSigningKey(env.CAPSULE_SIGNING_KEY);
  await ensureKeyRegistered(db, key, "capsules");
  const publishedAt = nowIso();

  const signature = toBase64(await signDer(key, bytes));
  const dependencies = await resolveForSbom(db, manifest);
  const sbomText = JSON.stringify(
    buildSbom({
      manifest,
      bundleSha256: row.sha256,
      files: bundle.files,
      dependencies,
      timestamp: publishedAt,
    }),
    null,
    2,
  );
  const sbomSha256 = await sha256Hex(sbomText);
  const [submitter, reviewer] = await Promise.all([
    handleOf(db, row.accountId),
    handleOf(db, row.reviewerId),
  ]);
  const attestation = await createAttestation(key, {
    _type: IN_TOTO_STATEMENT_TYPE,
    subject: [{ name: capsulePurl(name, version), digest: { sha256: row.sha256 } }],
    predicateType: PUBLISH_PREDICATE_TYPE,
    predicate: {
      capsule: { name, version, runtime: manifest.spec.runtime, permissions: manifest.spec.permissions },
      bundle: {
        sha256: row.sha256,
        size: row.size,
        signature: { keyid: key.keyid, algorithm: "ECDSA_P256_SHA256" },
      },
      submitter: { handle: submitter, submissionId: row.id, submittedAt: row.createdAt },
      review: {
        decision: "approve",
        mode: reviewer.startsWith("soma:auto") ? "automatic" : "human",
        reviewer,
        notes: row.decisionNotes,
        decidedAt: row.decidedAt,
        riskScore: row.riskScore,
      },
      sbom: { mediaType: CYCLONEDX_MEDIA_TYPE, specVersion: "1.5", sha256: sbomSha256 },
      publishedAt,
    },
  });

  const keys = publishedKeys(name, version);
  await Promise.all([
    env.BUNDLES.put(keys.bundle, bytes, {
      httpMetadata: { contentType: "application/gzip" },
      sha256: row.sha256,
    }),
    env.BUNDLES.put(keys.signature, utf8(signature), { httpMetadata: { contentType: "text/plain" } }),
    env.BUNDLES.put(keys.attestation, utf8(JSON.stringify(attestation, null, 2)), {
      httpMetadata: { contentType: "application/json" },
    }),
    env.BUNDLES.put(keys.sbom, utf8(sbomText), { httpMetadata: { contentType: CYCLONEDX_MEDIA_TYPE } }),
  ]);

  // Concurrent publishes of a new capsule's first versions both see no row: the insert yields to whoever
  // created it, the version row finds the capsule by name, and the listing is recomputed afterwards from
  // every version, so the order of arrival never matters.
  const capsuleIdByName = sql`(SELECT id FROM capsules WHERE name = ${name})`;
  await db.batch([
    db
      .insert(capsules)
      .values({
        id: newId("cap"),
        name,
        namespace: namespaceOf(name),
        ownerId: row.accountId,
        createdAt: publishedAt,
        latestVersion: version,
        description: manifest.spec.description,
        category: manifest.metadata.category,
        tags: manifest.metadata.tags,
        runtime: manifest.spec.runtime,
        pricingModel: manifest.spec.pricing.model,
        updatedAt: publishedAt,
      })
      .onConflictDoNothing({ target: capsules.name }),
    db.insert(capsuleVersions).values({
      id: newId("ver"),
      capsuleId: capsuleIdByName,
      name,
      version,
      status: "published",
      manifest: manifest as unknown as Record<string, unknown>,
      dependencies: manifest.spec.dependencies,
      permissions: manifest.spec.permissions,
      sha256: row.sha256,
      size: row.size,
      keyid: key.keyid,
      signature,
      submissionId: row.id,
      publishedAt,
    }),
    db.update(submissions).set({ status: "published" }).where(eq(submissions.id, row.id)),
    outboxInsert(
      db,
      cloudEvent("soma.capsule.published", `${name}@${version}`, {
        capsule: name,
        version,
        accountId: row.accountId,
        author: submitter,
        sha256: row.sha256,
        keyid: key.keyid,
      }),
    ),
    auditStatement(db, {
      actor: "system",
      action: "capsule.published",
      target: `capsule:${name}@${version}`,
      details: { submissionId: row.id, accountId: row.accountId, sha256: row.sha256, keyid: key.keyid },
    }),
  ]);
  await sealAuditLog(db);
  await refreshListing(db, name);
  const change = await priceChange(db, name, priceOfManifest(manifest.spec.pricing));
  if (change) await db.batch(change.statements as unknown as Parameters<typeof db.batch>[0]);
}

/**
 * Recomputes a capsule's listing (latest version, description, category, tags, search index) from all its
 * versions. Idempotent; called after every publish and yank.
 */
export async function refreshListing(db: Database, name: string): Promise<void> {
  const [capsule] = await db
    .select({ id: capsules.id })
    .from(capsules)
    .where(eq(capsules.name, name))
    .limit(1);
  if (!capsule) return;
  const versions = await db
    .select({
      version: capsuleVersions.version,
      status: capsuleVersions.status,
      manifest: capsuleVersions.manifest,
    })
    .from(capsuleVersions)
    .where(eq(capsuleVersions.capsuleId, capsule.id));
  const latest = pickLatest(versions) ?? versions.map((v) => v.version).sort(semver.rcompare)[0];
  const chosen = versions.find((v) => v.version === latest);
  if (!chosen) return;
  const manifest = chosen.manifest as unknown as CapsuleManifest;
  await db.batch([
    db
      .update(capsules)
      .set({
        latestVersion: chosen.version,
        description: manifest.spec.description,
        category: manifest.metadata.category,
        tags: manifest.metadata.tags,
        runtime: manifest.spec.runtime,
        pricingModel: manifest.spec.pricing.model,
        updatedAt: nowIso(),
      })
      .where(eq(capsules.id, capsule.id)),
    db.delete(capsuleTags).where(eq(capsuleTags.capsuleId, capsule.id)),
    ...manifest.metadata.tags.map((tag) => db.insert(capsuleTags).values({ capsuleId: capsule.id, tag })),
    db.delete(capsulesFts).where(eq(capsulesFts.capsuleId, capsule.id)),
    db.insert(capsulesFts).values({
      name,
      description: manifest.spec.description,
      tags: manifest.metadata.tags.join(" "),
      capsuleId: capsule.id,
    }),
  ] as unknown as Parameters<typeof db.batch>[0]);
  forgetRankedSearches();
}
