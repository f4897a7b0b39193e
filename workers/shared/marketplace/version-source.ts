import { inArray } from "drizzle-orm";
import type { Database } from "../db/client";
import { capsuleVersions } from "../db/schema";
import type { VersionCandidate, VersionSource } from "../domain/resolve";

export type VersionRow = typeof capsuleVersions.$inferSelect;

/**
 * A dependency-resolver source over D1 (one query per level of names) that keeps every row it read, keyed
 * `name@version`, so callers get manifests, digests and signatures of the chosen versions without reading again.
 */
export function d1VersionSource(db: Database): { source: VersionSource; rows: Map<string, VersionRow> } {
  const rows = new Map<string, VersionRow>();
  const source: VersionSource = async (names) => {
    const found = await db.select().from(capsuleVersions).where(inArray(capsuleVersions.name, names));
    const byName = new Map<string, VersionCandidate[]>();
    for (const row of found) {
      rows.set(`${row.name}@${row.version}`, row);
      const list = byName.get(row.name) ?? [];
      list.push({ ...row, status: row.status as VersionCandidate["status"] });
      byName.set(row.name, list);
    }
    return byName;
  };
  return { source, rows };
}
