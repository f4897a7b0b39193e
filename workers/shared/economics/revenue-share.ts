import { eq } from "drizzle-orm";
import type { Database } from "../db/client";
import { capsules } from "../db/schema";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";

/**
 * Sets the author's share of a capsule's future charges (whole percent; the platform keeps the rest). Charges
 * already recorded keep the split they were recorded with: the ledger is never rewritten.
 */
export async function setAuthorSharePct(
  db: Database,
  capsule: string,
  authorSharePct: number,
  by: { accountId: string | null; via: string },
): Promise<{ capsule: string; authorSharePct: number; previousAuthorSharePct: number }> {
  const [row] = await db
    .select({ id: capsules.id, share: capsules.authorSharePct, ownerId: capsules.ownerId })
    .from(capsules)
    .where(eq(capsules.name, capsule))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No capsule ${capsule}`);
  const event = cloudEvent("soma.capsule.revenue_share_changed", capsule, {
    accountId: row.ownerId,
    capsule,
    authorSharePct,
    previousAuthorSharePct: row.share,
    by: by.accountId ?? by.via,
  });
  await db.batch([
    db.update(capsules).set({ authorSharePct }).where(eq(capsules.id, row.id)),
    outboxInsert(db, event),
  ]);
  return { capsule, authorSharePct, previousAuthorSharePct: row.share };
}
