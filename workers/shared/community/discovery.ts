import { eq, inArray, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { accounts, capsules } from "../db/schema";
import { AppError } from "../errors";
import { type CatalogItem, publisherOf } from "../marketplace/catalog";
import { roundScore, TRENDING_WINDOW_DAYS, trendingWeight } from "./scoring";

const DAY_MS = 86_400_000;
/** The Julian day number of the Unix epoch, to compare JavaScript times with SQLite's julianday(). */
const UNIX_EPOCH_JULIAN_DAY = 2_440_587.5;
/** D1 binds at most 100 parameters per statement. */
const NAMES_PER_QUERY = 90;
/** Used-together looks at the most recent installers only, so a capsule with a huge audience stays cheap. */
const USED_TOGETHER_SAMPLE = 1000;

/** The owner account's columns a listing needs, for a select that left-joins `accounts` on the owner. */
export const publisherColumns = { handle: accounts.handle, verifiedAt: accounts.verifiedAt };

/** The catalog's listing of one capsule, as `GET /v1/capsules` shows it, given its owner's account columns. */
export function catalogItem(
  row: typeof capsules.$inferSelect,
  owner: { handle: string | null; verifiedAt: string | null },
): CatalogItem {
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
    publisher: publisherOf(row, owner),
  };
}

/** Catalog listings by name; names with no capsule are absent from the map. */
export async function capsuleSummaries(db: Database, names: string[]): Promise<Map<string, CatalogItem>> {
  const unique = [...new Set(names)];
  const out = new Map<string, CatalogItem>();
  for (let i = 0; i < unique.length; i += NAMES_PER_QUERY) {
    const rows = await db
      .select({ capsule: capsules, ...publisherColumns })
      .from(capsules)
      .leftJoin(accounts, eq(accounts.id, capsules.ownerId))
      .where(inArray(capsules.name, unique.slice(i, i + NAMES_PER_QUERY)));
    for (const row of rows) out.set(row.capsule.name, catalogItem(row.capsule, row));
  }
  return out;
}

/** The capsule row for a name, or NOT_FOUND. */
export async function requireCapsule(db: Database, name: string): Promise<typeof capsules.$inferSelect> {
  const [row] = await db.select().from(capsules).where(eq(capsules.name, name)).limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No capsule ${name}`);
  return row;
}

export interface TrendingItem {
  capsule: CatalogItem;
  score: number;
  installs: number;
  executions: number;
}

/**
 * Capsules by activity over the last TRENDING_WINDOW_DAYS: score = sum over signals of exp(-age_days / 2)
 * (trendingWeight), where a signal is an account installing a capsule (still installed) or running it, counted
 * at most once per account, capsule, kind and UTC day at that day's latest time. Counting accounts rather than
 * rows keeps one account's fifty-task project or repeated installs from buying the top spot. SQL groups the
 * signals per capsule and day (at their mean time, which moves a weight by under 1%), so the rows read stay
 * bounded by capsules x days however busy the week was; the decay itself is computed here.
 */
export async function trending(db: Database, limit: number, now = new Date()): Promise<TrendingItem[]> {
  const since = new Date(now.getTime() - TRENDING_WINDOW_DAYS * DAY_MS).toISOString();
  const rows = await db.all<{ capsule: string; kind: string; signals: number; t: number }>(sql`
    SELECT capsule, kind, count(*) AS signals, avg(t) AS t FROM (
      SELECT capsule_name AS capsule, 'install' AS kind, substr(created_at, 1, 10) AS day,
             julianday(max(created_at)) AS t
        FROM installs
       WHERE created_at >= ${since} AND removed_at IS NULL
       GROUP BY account_id, capsule_name, day
      UNION ALL
      SELECT capsule, 'execution' AS kind, substr(created_at, 1, 10) AS day, julianday(max(created_at)) AS t
        FROM ledger_entries
       WHERE kind = 'execution_counted' AND created_at >= ${since} AND capsule IS NOT NULL
       GROUP BY account_id, capsule, day
    )
    GROUP BY capsule, kind, day`);
  const nowJulian = now.getTime() / DAY_MS + UNIX_EPOCH_JULIAN_DAY;
  const byCapsule = new Map<string, { score: number; installs: number; executions: number }>();
  for (const row of rows) {
    const entry = byCapsule.get(row.capsule) ?? { score: 0, installs: 0, executions: 0 };
    const signals = Number(row.signals);
    entry.score += signals * trendingWeight(nowJulian - Number(row.t));
    if (row.kind === "install") entry.installs += signals;
    else entry.executions += signals;
    byCapsule.set(row.capsule, entry);
  }
  const ranked = [...byCapsule.entries()]
    .filter(([, entry]) => entry.score > 0)
    .sort(([a, x], [b, y]) => y.score - x.score || a.localeCompare(b))
    .slice(0, limit);
  const summaries = await capsuleSummaries(
    db,
    ranked.map(([name]) => name),
  );
  return ranked.flatMap(([name, entry]) => {
    const capsule = summaries.get(name);
    return capsule ? [{ capsule, ...entry, score: roundScore(entry.score) }] : [];
  });
}

export interface UsedTogetherItem {
  capsule: CatalogItem;
  /** How many of this capsule's installers also have that one installed. */
  accounts: number;
}

/** Capsules most often installed by the accounts that have this one installed (its latest 1,000 installers). */
export async function usedTogether(db: Database, name: string, limit: number): Promise<UsedTogetherItem[]> {
  await requireCapsule(db, name);
  const rows = await db.all<{ capsule: string; accounts: number }>(sql`
    SELECT other.capsule_name AS capsule, count(DISTINCT other.account_id) AS accounts
      FROM (SELECT account_id FROM installs
             WHERE capsule_name = ${name} AND removed_at IS NULL
             GROUP BY account_id
             ORDER BY max(created_at) DESC
             LIMIT ${USED_TOGETHER_SAMPLE}) AS base
      JOIN installs AS other
        ON other.account_id = base.account_id AND other.removed_at IS NULL AND other.capsule_name <> ${name}
     GROUP BY other.capsule_name
     ORDER BY accounts DESC, other.capsule_name
     LIMIT ${limit}`);
  const summaries = await capsuleSummaries(
    db,
    rows.map((row) => row.capsule),
  );
  return rows.flatMap((row) => {
    const capsule = summaries.get(row.capsule);
    return capsule ? [{ capsule, accounts: Number(row.accounts) }] : [];
  });
}
