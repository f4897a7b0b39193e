import { and, eq, type SQL, sql } from "drizzle-orm";
import semver from "semver";
import { auditStatement, sealAuditLog } from "../audit/log";
import type { Principal } from "../auth/principal";
import type { Database } from "../db/client";
import { accounts, capsules, capsuleVersions } from "../db/schema";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { publishedKeys } from "../storage/bundles";
import { refreshListing } from "./publishing";
import { rankedSearch, rememberRankedSearch } from "./search-memo";

export const SORTS = ["relevance", "popular", "rating", "recent", "name"] as const;
export type CatalogSort = (typeof SORTS)[number];

export interface CatalogQuery {
  q?: string | undefined;
  category?: string | undefined;
  tag?: string | undefined;
  pricing?: "free" | "paid" | undefined;
  /** Only capsules whose owner is a verified publisher. */
  verified?: boolean | undefined;
  sort?: CatalogSort | undefined;
  limit: number;
  cursor?: string | undefined;
}

/** Who publishes a capsule: its owner's handle, and whether an admin verified that account. */
export interface Publisher {
  handle: string;
  verified: boolean;
}

export interface CatalogItem {
  name: string;
  namespace: string;
  latestVersion: string;
  description: string;
  category: string;
  tags: string[];
  runtime: string;
  pricingModel: string;
  installCount: number;
  executionCount: number;
  ratingAvg: number;
  ratingCount: number;
  updatedAt: string;
  publisher: Publisher;
}

type CapsuleRow = typeof capsules.$inferSelect;
type ListedRow = CapsuleRow & { publisher: Publisher };

/** The publisher from its account's columns; a capsule whose owner row is gone shows its namespace, unverified. */
export function publisherOf(
  row: Pick<CapsuleRow, "namespace">,
  account: { handle: string | null; verifiedAt: string | null },
): Publisher {
  return { handle: account.handle ?? row.namespace, verified: account.verifiedAt !== null };
}

function item(row: ListedRow): CatalogItem {
  return {
    name: row.name,
    namespace: row.namespace,
    latestVersion: row.latestVersion,
    description: row.description,
    category: row.category,
    tags: row.tags,
    runtime: row.runtime,
    pricingModel: row.pricingModel,
    installCount: row.installCount,
    executionCount: row.executionCount,
    ratingAvg: row.ratingAvg,
    ratingCount: row.ratingCount,
    updatedAt: row.updatedAt,
    publisher: row.publisher,
  };
}

/** The owner's handle and verification, read with every listing row. */
const PUBLISHER_COLUMNS = sql.raw("a.handle AS publisher_handle, a.verified_at AS publisher_verified_at");
const PUBLISHER_JOIN = sql.raw("LEFT JOIN accounts a ON a.id = c.owner_id");

function encodeCursor(offset: number): string {
  return btoa(JSON.stringify({ o: offset })).replace(/=+$/, "");
}

function decodeCursor(cursor: string | undefined): number {
  if (!cursor) return 0;
  try {
    const { o } = JSON.parse(atob(cursor)) as { o: unknown };
    if (typeof o === "number" && Number.isInteger(o) && o >= 0 && o <= 100_000) return o;
  } catch {
    // fall through to the error below
  }
  throw new AppError("VALIDATION_FAILED", "Invalid cursor: pass back the nextCursor of a previous page", {
    issues: [{ path: "cursor", message: "unrecognised cursor" }],
  });
}

function trigrams(text: string): Set<string> {
  const out = new Set<string>();
  for (const word of text.toLowerCase().split(/[^a-z0-9]+/)) {
    for (let i = 0; i + 3 <= word.length; i++) out.add(word.slice(i, i + 3));
  }
  return out;
}

/**
 * Trigram sets of listing texts seen by this isolate, keyed by the text itself (so always right): ranking a
 * search re-reads the same few hundred candidates, and splitting their texts was most of its JavaScript time.
 * Bounded; the oldest entry goes first.
 */
const textTrigrams = new Map<string, Set<string>>();
const MAX_CACHED_TEXTS = 10_000;

function cachedTrigrams(text: string): Set<string> {
  let found = textTrigrams.get(text);
  if (!found) {
    found = trigrams(text);
    if (textTrigrams.size >= MAX_CACHED_TEXTS) {
      const oldest = textTrigrams.keys().next();
      if (!oldest.done) textTrigrams.delete(oldest.value);
    }
    textTrigrams.set(text, found);
  }
  return found;
}

const ORDER_BY: Record<Exclude<CatalogSort, "relevance">, string> = {
  popular: "c.install_count DESC, c.execution_count DESC, c.name",
  rating: "c.rating_avg DESC, c.rating_count DESC, c.name",
  recent: "c.updated_at DESC, c.name",
  name: "c.name",
};

/** Candidate rows considered when ranking a text search; enough for any realistic page depth. */
const SEARCH_CANDIDATES = 200;

/**
 * Browses or searches the catalog. Text search matches trigrams, so substrings and misspellings still find
 * capsules; candidates are re-ranked by trigram overlap with the name (weighted) and the description and tags.
 */
export async function searchCatalog(
  db: Database,
  query: CatalogQuery,
): Promise<{ items: CatalogItem[]; nextCursor: string | null }> {
  const offset = decodeCursor(query.cursor);
  const filters: SQL[] = [];
  if (query.category) filters.push(sql`c.category = ${query.category}`);
  if (query.tag)
    filters.push(
      sql`EXISTS (SELECT 1 FROM capsule_tags t WHERE t.capsule_id = c.id AND t.tag = ${query.tag})`,
    );
  if (query.pricing === "free") filters.push(sql`c.pricing_model = 'free'`);
  if (query.pricing === "paid") filters.push(sql`c.pricing_model <> 'free'`);
  if (query.verified === true) filters.push(sql`a.verified_at IS NOT NULL`);
  if (query.verified === false) filters.push(sql`a.verified_at IS NULL`);
  const q = query.q?.trim() ?? "";
  const queryTrigrams = trigrams(q);

  if (queryTrigrams.size === 0 && q.length > 0) {
    // Too short for trigrams: a prefix match on the name or any word of it.
    filters.push(
      sql`(c.name LIKE ${`${q.toLowerCase()}%`} OR c.name LIKE ${`%/${q.toLowerCase()}%`} OR c.name LIKE ${`%-${q.toLowerCase()}%`})`,
    );
  }
  const where = filters.length > 0 ? sql.join([sql`WHERE`, sql.join(filters, sql` AND `)], sql` `) : sql``;

  if (queryTrigrams.size === 0) {
    const sort = query.sort && query.sort !== "relevance" ? query.sort : "popular";
    // Browsing in the default order shows the admins' featured shelf first, in its order, then the rest by
    // popularity: one join on the shelf's primary key, so it costs nothing a plain browse does not.
    const featuredFirst = q.length === 0 && (query.sort === undefined || query.sort === "relevance");
    const rows = featuredFirst
      ? await db.all<Record<string, unknown>>(
          sql`SELECT c.*, ${PUBLISHER_COLUMNS} FROM capsules c ${PUBLISHER_JOIN}
              LEFT JOIN featured_capsules f ON f.capsule_name = c.name ${where}
              ORDER BY f.position IS NULL, f.position, ${sql.raw(ORDER_BY.popular)}
              LIMIT ${query.limit + 1} OFFSET ${offset}`,
        )
      : await db.all<Record<string, unknown>>(
          sql`SELECT c.*, ${PUBLISHER_COLUMNS} FROM capsules c ${PUBLISHER_JOIN} ${where} ORDER BY ${sql.raw(ORDER_BY[sort])} LIMIT ${query.limit + 1} OFFSET ${offset}`,
        );
    return page(rows.map(fromRaw), query.limit, offset);
  }

  const quoted = [...queryTrigrams].map((t) => `"${t}"`);
  const sort = query.sort ?? "relevance";
  const baseKey = JSON.stringify([
    q,
    query.category ?? null,
    query.tag ?? null,
    query.pricing ?? null,
    query.verified ?? null,
    sort,
  ]);
  const ranked = async (mode: "all" | "any") => {
    const key = `${mode} ${baseKey}`;
    const remembered = rankedSearch<ListedRow>(key);
    if (remembered) return remembered;
    const rows = (
      await db.all<Record<string, unknown>>(
        sql`SELECT c.*, ${PUBLISHER_COLUMNS} FROM capsules c ${PUBLISHER_JOIN} WHERE ${sql.join(
          [
            sql`c.id IN (SELECT capsule_id FROM capsules_fts WHERE capsules_fts MATCH ${quoted.join(mode === "all" ? " AND " : " OR ")} ORDER BY rank LIMIT ${SEARCH_CANDIDATES})`,
            ...filters,
          ],
          sql` AND `,
        )}`,
      )
    ).map(fromRaw);
    const result = rankRows(rows, queryTrigrams, sort);
    rememberRankedSearch(key, rows.length, result);
    return { candidates: rows.length, ranked: result };
  };
  // Every trigram present is the common case and cheap (the intersection is small); only when that finds too
  // little (a misspelling) does the search widen to any trigram, which is what makes it typo tolerant.
  let found = await ranked("all");
  if (found.candidates < offset + query.limit + 1 && quoted.length > 1) found = await ranked("any");
  return page(found.ranked.slice(offset, offset + query.limit + 1), query.limit, offset);
}

/** Scores candidates by the query's trigrams in their name and text, drops weak matches, sorts by `sort`. */
function rankRows(rows: ListedRow[], queryTrigrams: Set<string>, sort: CatalogSort): ListedRow[] {
  const scored = rows
    .map((row) => {
      const nameTrigrams = cachedTrigrams(row.name.replace("/", " "));
      const text = cachedTrigrams(`${row.description} ${row.tags.join(" ")}`);
      let nameHits = 0;
      let textHits = 0;
      for (const t of queryTrigrams) {
        if (nameTrigrams.has(t)) nameHits += 1;
        if (text.has(t)) textHits += 1;
      }
      const coverage = Math.max(nameHits, textHits) / queryTrigrams.size;
      return { row, coverage, score: (2 * nameHits + textHits) / queryTrigrams.size };
    })
    .filter((s) => s.coverage >= 0.4);
  scored.sort((a, b) => {
    if (sort === "relevance")
      return (
        b.score - a.score || b.row.installCount - a.row.installCount || a.row.name.localeCompare(b.row.name)
      );
    if (sort === "popular") return b.row.installCount - a.row.installCount || b.score - a.score;
    if (sort === "rating") return b.row.ratingAvg - a.row.ratingAvg || b.score - a.score;
    if (sort === "recent") return b.row.updatedAt.localeCompare(a.row.updatedAt);
    return a.row.name.localeCompare(b.row.name);
  });
  return scored.map((s) => s.row);
}

function page(rows: ListedRow[], limit: number, offset: number) {
  return {
    items: rows.slice(0, limit).map(item),
    nextCursor: rows.length > limit ? encodeCursor(offset + limit) : null,
  };
}

function fromRaw(raw: Record<string, unknown>): ListedRow {
  const namespace = raw.namespace as string;
  return {
    publisher: publisherOf(
      { namespace },
      {
        handle: (raw.publisher_handle as string | null) ?? null,
        verifiedAt: (raw.publisher_verified_at as string | null) ?? null,
      },
    ),
    id: raw.id as string,
    name: raw.name as string,
    namespace: raw.namespace as string,
    ownerId: raw.owner_id as string,
    latestVersion: raw.latest_version as string,
    description: raw.description as string,
    category: raw.category as string,
    tags: JSON.parse(raw.tags as string) as string[],
    runtime: raw.runtime as string,
    pricingModel: raw.pricing_model as string,
    installCount: raw.install_count as number,
    executionCount: raw.execution_count as number,
    ratingAvg: raw.rating_avg as number,
    ratingCount: raw.rating_count as number,
    authorSharePct: raw.author_share_pct as number,
    createdAt: raw.created_at as string,
    updatedAt: raw.updated_at as string,
  };
}

export interface VersionSummary {
  version: string;
  status: string;
  sha256: string;
  size: number;
  keyid: string;
  publishedAt: string;
  deprecationMessage: string | null;
  yankReason: string | null;
}

/**
 * One capsule: its listing, the latest manifest and every version, newest first. Three reads in one D1 round
 * trip; only the latest version's manifest is read (older manifests can be large and are not shown).
 */
export async function capsuleDetail(db: Database, name: string) {
  const [[found], versions, [latest]] = await db.batch([
    db
      .select({ capsule: capsules, handle: accounts.handle, verifiedAt: accounts.verifiedAt })
      .from(capsules)
      .leftJoin(accounts, eq(accounts.id, capsules.ownerId))
      .where(eq(capsules.name, name))
      .limit(1),
    db
      .select({
        version: capsuleVersions.version,
        status: capsuleVersions.status,
        sha256: capsuleVersions.sha256,
        size: capsuleVersions.size,
        keyid: capsuleVersions.keyid,
        publishedAt: capsuleVersions.publishedAt,
        deprecationMessage: capsuleVersions.deprecationMessage,
        yankReason: capsuleVersions.yankReason,
      })
      .from(capsuleVersions)
      .where(eq(capsuleVersions.name, name)),
    db
      .select({ manifest: capsuleVersions.manifest })
      .from(capsuleVersions)
      .innerJoin(
        capsules,
        and(eq(capsules.id, capsuleVersions.capsuleId), eq(capsules.latestVersion, capsuleVersions.version)),
      )
      .where(eq(capsules.name, name))
      .limit(1),
  ]);
  if (!found) throw new AppError("NOT_FOUND", `No capsule ${name}`);
  const row: ListedRow = { ...found.capsule, publisher: publisherOf(found.capsule, found) };
  versions.sort((a, b) => semver.rcompare(a.version, b.version));
  return {
    capsule: item(row),
    manifest: latest?.manifest ?? null,
    versions: versions satisfies VersionSummary[],
  };
}

async function ownedVersion(db: Database, principal: Principal, name: string, version: string) {
  const [row] = await db
    .select({ capsule: capsules, version: capsuleVersions })
    .from(capsuleVersions)
    .innerJoin(capsules, eq(capsules.id, capsuleVersions.capsuleId))
    .where(and(eq(capsuleVersions.name, name), eq(capsuleVersions.version, version)))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No version ${name}@${version}`);
  if (row.capsule.ownerId !== principal.accountId && !principal.roles.includes("admin")) {
    throw new AppError("FORBIDDEN", `Only the owner of ${name} or an admin can change its versions`);
  }
  return row;
}

/** Marks a version deprecated: it still installs, with a warning carrying the message. */
export async function deprecateVersion(
  db: Database,
  principal: Principal,
  name: string,
  version: string,
  message: string,
) {
  const row = await ownedVersion(db, principal, name, version);
  if (row.version.status === "yanked") {
    throw new AppError(
      "INVALID_STATE",
      `${name}@${version} is yanked; a yanked version cannot be deprecated`,
    );
  }
  await db.batch([
    db
      .update(capsuleVersions)
      .set({ status: "deprecated", deprecationMessage: message })
      .where(eq(capsuleVersions.id, row.version.id)),
    outboxInsert(
      db,
      cloudEvent("soma.capsule.deprecated", `${name}@${version}`, { capsule: name, version, message }),
    ),
    auditStatement(db, {
      actor: principal,
      action: "capsule.deprecated",
      target: `capsule:${name}@${version}`,
      details: { message },
    }),
  ]);
  await sealAuditLog(db);
  return { name, version, status: "deprecated" as const, deprecationMessage: message };
}

/** Yanks a version: it never resolves for new installs, and its number is never reused. */
export async function yankVersion(
  db: Database,
  principal: Principal,
  name: string,
  version: string,
  reason: string,
) {
  const row = await ownedVersion(db, principal, name, version);
  if (row.version.status === "yanked")
    throw new AppError("INVALID_STATE", `${name}@${version} is already yanked`);
  await db.batch([
    db
      .update(capsuleVersions)
      .set({ status: "yanked", yankReason: reason })
      .where(eq(capsuleVersions.id, row.version.id)),
    outboxInsert(
      db,
      cloudEvent("soma.capsule.yanked", `${name}@${version}`, { capsule: name, version, reason }),
    ),
    auditStatement(db, {
      actor: principal,
      action: "capsule.yanked",
      target: `capsule:${name}@${version}`,
      details: { reason },
    }),
  ]);
  await sealAuditLog(db);
  await refreshListing(db, name);
  return { name, version, status: "yanked" as const, yankReason: reason };
}

export const ARTIFACTS = {
  bundle: { key: "bundle", contentType: "application/gzip" },
  "bundle.sig": { key: "signature", contentType: "text/plain; charset=utf-8" },
  attestation: { key: "attestation", contentType: "application/vnd.dev.sigstore.bundle.v0.3+json" },
  sbom: { key: "sbom", contentType: "application/vnd.cyclonedx+json" },
} as const;

export type ArtifactKind = keyof typeof ARTIFACTS;

/** Streams a published version's bundle, signature, attestation or SBOM exactly as stored. */
export async function publishedArtifact(
  env: { BUNDLES: R2Bucket },
  db: Database,
  name: string,
  version: string,
  kind: ArtifactKind,
): Promise<{ body: ReadableStream; contentType: string; size: number; sha256?: string }> {
  const [row] = await db
    .select({ sha256: capsuleVersions.sha256 })
    .from(capsuleVersions)
    .where(and(eq(capsuleVersions.name, name), eq(capsuleVersions.version, version)))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No version ${name}@${version}`);
  const object = await env.BUNDLES.get(publishedKeys(name, version)[ARTIFACTS[kind].key]);
  if (!object) throw new AppError("NOT_FOUND", `${kind} of ${name}@${version} is missing`);
  return {
    body: object.body,
    contentType: ARTIFACTS[kind].contentType,
    size: object.size,
    ...(kind === "bundle" ? { sha256: row.sha256 } : {}),
  };
}

/** Refuses (403) anyone but the capsule's owner or an admin; 404 for an unknown capsule. */
export async function requireOwner(db: Database, principal: Principal, name: string): Promise<void> {
  const [row] = await db
    .select({ ownerId: capsules.ownerId })
    .from(capsules)
    .where(eq(capsules.name, name))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No capsule ${name}`);
  if (row.ownerId !== principal.accountId && !principal.roles.includes("admin")) {
    throw new AppError("FORBIDDEN", `Only the owner of ${name} or an admin can change it`);
  }
}
