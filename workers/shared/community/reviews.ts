import { and, asc, count, desc, eq, isNull, ne, type SQL, sql } from "drizzle-orm";
import { type Database, newId, nowIso } from "../db/client";
import {
  accounts,
  capsuleReviews,
  capsules,
  installs,
  ledgerEntries,
  reviewReports,
  reviewVotes,
} from "../db/schema";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { decodeCursor, pageOf } from "./cursor";
import { requireCapsule } from "./discovery";
import { escapeHtml } from "./html";
import { bayesianAverage, PRIOR_MEAN, PRIOR_VOTES, roundScore } from "./scoring";

export type ReviewStatus = "visible" | "hidden" | "removed";
type ReviewRow = typeof capsuleReviews.$inferSelect;

/** A review as the API shows it: text exactly as written, and `textHtml` escaped for clients that render HTML. */
export interface ReviewView {
  id: string;
  capsule: string;
  author: { handle: string };
  stars: number;
  text: string | null;
  textHtml: string | null;
  status: ReviewStatus;
  helpful: number;
  notHelpful: number;
  reply: { text: string; textHtml: string; createdAt: string; updatedAt: string } | null;
  createdAt: string;
  updatedAt: string;
}

/** Maps a stored review and its author's handle to the API shape. */
export function reviewView(row: ReviewRow, handle: string): ReviewView {
  return {
    id: row.id,
    capsule: row.capsuleName,
    author: { handle },
    stars: row.stars,
    text: row.text,
    textHtml: row.text === null ? null : escapeHtml(row.text),
    status: row.status,
    helpful: row.helpfulCount,
    notHelpful: row.notHelpfulCount,
    reply:
      row.replyText === null
        ? null
        : {
            text: row.replyText,
            textHtml: escapeHtml(row.replyText),
            createdAt: row.repliedAt ?? row.updatedAt,
            updatedAt: row.replyUpdatedAt ?? row.repliedAt ?? row.updatedAt,
          },
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

async function reviewWithHandle(db: Database, where: SQL | undefined): Promise<ReviewView | null> {
  const [row] = await db
    .select({ review: capsuleReviews, handle: accounts.handle })
    .from(capsuleReviews)
    .innerJoin(accounts, eq(accounts.id, capsuleReviews.accountId))
    .where(where)
    .limit(1);
  return row ? reviewView(row.review, row.handle) : null;
}

/** A review of the capsule that the public can see, or NOT_FOUND (hidden and removed ones included). */
export async function visibleReview(db: Database, capsule: string, reviewId: string): Promise<ReviewRow> {
  const [row] = await db
    .select()
    .from(capsuleReviews)
    .where(
      and(
        eq(capsuleReviews.id, reviewId),
        eq(capsuleReviews.capsuleName, capsule),
        eq(capsuleReviews.status, "visible"),
      ),
    )
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No review ${reviewId} of ${capsule}`);
  return row;
}

/**
 * The statement that recomputes a capsule's rating_count and rating_avg (the Bayesian average, see scoring.ts)
 * from its ratings; it goes into the same batch as every change to them, after that change. Hidden reviews still
 * count (they wait for a moderator); removed ones do not.
 */
export function refreshCapsuleRating(db: Database, capsule: string) {
  const counted = sql`FROM capsule_reviews WHERE capsule_name = ${capsule} AND status <> 'removed'`;
  return db
    .update(capsules)
    .set({
      ratingCount: sql`(SELECT count(*) ${counted})`,
      ratingAvg: sql`(SELECT CASE WHEN count(*) = 0 THEN 0
        ELSE (${PRIOR_VOTES} * ${PRIOR_MEAN} + sum(stars)) * 1.0 / (${PRIOR_VOTES} + count(*)) END ${counted})`,
    })
    .where(eq(capsules.name, capsule));
}

/** Whether an account may rate a capsule: it has it installed and has run it in a project at least once. */
export async function ratingEligibility(
  db: Database,
  accountId: string,
  capsule: string,
): Promise<{ installed: boolean; ran: boolean }> {
  const [installed, ran] = await Promise.all([
    db
      .select({ id: installs.id })
      .from(installs)
      .where(
        and(eq(installs.accountId, accountId), eq(installs.capsuleName, capsule), isNull(installs.removedAt)),
      )
      .limit(1),
    // One execution_counted entry is written per settled execution, charged to the project's owner.
    db
      .select({ id: ledgerEntries.id })
      .from(ledgerEntries)
      .where(
        and(
          eq(ledgerEntries.kind, "execution_counted"),
          eq(ledgerEntries.accountId, accountId),
          eq(ledgerEntries.capsule, capsule),
        ),
      )
      .limit(1),
  ]);
  return { installed: installed.length > 0, ran: ran.length > 0 };
}

/**
 * Creates or replaces the caller's rating of a capsule (stars and optional text). Only accounts that have the
 * capsule installed and have run it may rate, never its owner; a rating a moderator removed stays removed.
 */
export async function putRating(
  db: Database,
  accountId: string,
  capsuleName: string,
  input: { stars: number; text: string | null },
): Promise<{ review: ReviewView; created: boolean }> {
  const capsule = await requireCapsule(db, capsuleName);
  if (capsule.ownerId === accountId) {
    throw new AppError("FORBIDDEN", `You own ${capsuleName}; authors cannot rate their own capsules`);
  }
  const eligibility = await ratingEligibility(db, accountId, capsuleName);
  if (!eligibility.installed || !eligibility.ran) {
    const missing = [
      ...(eligibility.installed ? [] : ["install it"]),
      ...(eligibility.ran ? [] : ["run it in a project"]),
    ];
    throw new AppError(
      "FORBIDDEN",
      `Only accounts that installed and ran ${capsuleName} can rate it: ${missing.join(" and ")} first`,
      eligibility,
    );
  }
  const mine = and(eq(capsuleReviews.capsuleName, capsuleName), eq(capsuleReviews.accountId, accountId));
  const [existing] = await db.select().from(capsuleReviews).where(mine).limit(1);
  if (existing?.status === "removed") {
    throw new AppError(
      "FORBIDDEN",
      `A moderator removed your review of ${capsuleName}; it cannot be changed`,
    );
  }
  const now = nowIso();
  const id = existing?.id ?? newId("rev");
  const event = cloudEvent(existing ? "soma.rating.updated" : "soma.rating.created", capsuleName, {
    accountId,
    capsule: capsuleName,
    stars: input.stars,
    reviewId: id,
  });
  await db.batch([
    db
      .insert(capsuleReviews)
      .values({
        id,
        capsuleName,
        accountId,
        stars: input.stars,
        text: input.text,
        status: "visible",
        createdAt: now,
        updatedAt: now,
      })
      .onConflictDoUpdate({
        target: [capsuleReviews.capsuleName, capsuleReviews.accountId],
        set: { stars: input.stars, text: input.text, updatedAt: now },
        // A removal between the read above and this batch still wins.
        setWhere: sql`${capsuleReviews.status} <> 'removed'`,
      }),
    refreshCapsuleRating(db, capsuleName),
    outboxInsert(db, event),
  ]);
  const review = await reviewWithHandle(db, mine);
  if (!review) throw new Error(`review of ${capsuleName} by ${accountId} vanished after writing it`);
  return { review, created: !existing };
}

/** Deletes the caller's rating of a capsule with its votes, reports and reply. */
export async function deleteRating(db: Database, accountId: string, capsuleName: string): Promise<void> {
  const [existing] = await db
    .select()
    .from(capsuleReviews)
    .where(and(eq(capsuleReviews.capsuleName, capsuleName), eq(capsuleReviews.accountId, accountId)))
    .limit(1);
  if (!existing) throw new AppError("NOT_FOUND", `You have not rated ${capsuleName}`);
  if (existing.status === "removed") {
    // Deleting would let the author rate again and undo the moderator's decision.
    throw new AppError(
      "FORBIDDEN",
      `A moderator removed your review of ${capsuleName}; it cannot be changed`,
    );
  }
  await db.batch([
    db.delete(reviewVotes).where(eq(reviewVotes.reviewId, existing.id)),
    db.delete(reviewReports).where(eq(reviewReports.reviewId, existing.id)),
    db.delete(capsuleReviews).where(eq(capsuleReviews.id, existing.id)),
    refreshCapsuleRating(db, capsuleName),
    outboxInsert(
      db,
      cloudEvent("soma.rating.deleted", capsuleName, {
        accountId,
        capsule: capsuleName,
        stars: existing.stars,
        reviewId: existing.id,
      }),
    ),
  ]);
}

export const REVIEW_SORTS = ["helpful", "recent"] as const;
export type ReviewSort = (typeof REVIEW_SORTS)[number];

const REVIEW_ORDER: Record<ReviewSort, SQL[]> = {
  helpful: [
    desc(sql`${capsuleReviews.helpfulCount} - ${capsuleReviews.notHelpfulCount}`),
    desc(capsuleReviews.helpfulCount),
    desc(capsuleReviews.updatedAt),
    asc(capsuleReviews.id),
  ],
  recent: [desc(capsuleReviews.updatedAt), asc(capsuleReviews.id)],
};

/** A page of a capsule's visible reviews, most helpful (net helpful votes) or most recently written first. */
export async function listReviews(
  db: Database,
  capsuleName: string,
  query: { sort: ReviewSort; limit: number; cursor?: string | undefined },
): Promise<{ items: ReviewView[]; nextCursor: string | null }> {
  const offset = decodeCursor(query.cursor);
  await requireCapsule(db, capsuleName);
  const rows = await db
    .select({ review: capsuleReviews, handle: accounts.handle })
    .from(capsuleReviews)
    .innerJoin(accounts, eq(accounts.id, capsuleReviews.accountId))
    .where(and(eq(capsuleReviews.capsuleName, capsuleName), eq(capsuleReviews.status, "visible")))
    .orderBy(...REVIEW_ORDER[query.sort])
    .limit(query.limit + 1)
    .offset(offset);
  const page = pageOf(rows, query.limit, offset);
  return { items: page.items.map((row) => reviewView(row.review, row.handle)), nextCursor: page.nextCursor };
}

export interface RatingSummary {
  capsule: string;
  /** The plain mean of the stars, rounded to 2 decimals; null with no ratings. */
  average: number | null;
  /** The Bayesian average the catalog ranks by, rounded to 2 decimals; null with no ratings. */
  bayesian: number | null;
  count: number;
  distribution: Record<"1" | "2" | "3" | "4" | "5", number>;
  prior: { mean: number; votes: number };
}

/** A capsule's rating: plain and Bayesian averages, the count and how many ratings gave each star. */
export async function ratingSummary(db: Database, capsuleName: string): Promise<RatingSummary> {
  await requireCapsule(db, capsuleName);
  const rows = await db
    .select({ stars: capsuleReviews.stars, n: count() })
    .from(capsuleReviews)
    .where(and(eq(capsuleReviews.capsuleName, capsuleName), ne(capsuleReviews.status, "removed")))
    .groupBy(capsuleReviews.stars);
  const distribution = { "1": 0, "2": 0, "3": 0, "4": 0, "5": 0 };
  let total = 0;
  let sum = 0;
  for (const row of rows) {
    distribution[String(row.stars) as keyof typeof distribution] = row.n;
    total += row.n;
    sum += row.n * row.stars;
  }
  const bayesian = bayesianAverage(sum, total);
  return {
    capsule: capsuleName,
    average: total === 0 ? null : roundScore(sum / total, 2),
    bayesian: bayesian === null ? null : roundScore(bayesian, 2),
    count: total,
    distribution,
    prior: { mean: PRIOR_MEAN, votes: PRIOR_VOTES },
  };
}

/** The capsule owner's public reply to a review: one per review, replaced when posted again. */
export async function replyToReview(
  db: Database,
  accountId: string,
  capsuleName: string,
  reviewId: string,
  text: string,
): Promise<{ review: ReviewView; created: boolean }> {
  const capsule = await requireCapsule(db, capsuleName);
  if (capsule.ownerId !== accountId) {
    throw new AppError("FORBIDDEN", `Only the owner of ${capsuleName} can reply to its reviews`);
  }
  const review = await visibleReview(db, capsuleName, reviewId);
  const now = nowIso();
  await db.batch([
    db
      .update(capsuleReviews)
      .set({ replyText: text, repliedAt: review.repliedAt ?? now, replyUpdatedAt: now })
      .where(eq(capsuleReviews.id, reviewId)),
    outboxInsert(
      db,
      cloudEvent("soma.review.replied", capsuleName, { accountId, capsule: capsuleName, reviewId }),
    ),
  ]);
  const view = await reviewWithHandle(db, eq(capsuleReviews.id, reviewId));
  if (!view) throw new AppError("NOT_FOUND", `No review ${reviewId} of ${capsuleName}`);
  return { review: view, created: review.replyText === null };
}

/** Records the caller's helpful / not helpful vote on someone else's review; voting again changes it. */
export async function voteOnReview(
  db: Database,
  accountId: string,
  capsuleName: string,
  reviewId: string,
  helpful: boolean,
): Promise<{ reviewId: string; helpful: boolean; counts: { helpful: number; notHelpful: number } }> {
  const review = await visibleReview(db, capsuleName, reviewId);
  if (review.accountId === accountId) {
    throw new AppError("FORBIDDEN", "You cannot vote on your own review");
  }
  const now = nowIso();
  await db.batch([
    db
      .insert(reviewVotes)
      .values({ reviewId, accountId, helpful, createdAt: now, updatedAt: now })
      .onConflictDoUpdate({
        target: [reviewVotes.reviewId, reviewVotes.accountId],
        set: { helpful, updatedAt: now },
      }),
    db
      .update(capsuleReviews)
      .set({
        helpfulCount: sql`(SELECT count(*) FROM review_votes WHERE review_id = ${reviewId} AND helpful = 1)`,
        notHelpfulCount: sql`(SELECT count(*) FROM review_votes WHERE review_id = ${reviewId} AND helpful = 0)`,
      })
      .where(eq(capsuleReviews.id, reviewId)),
  ]);
  const [counts] = await db
    .select({ helpful: capsuleReviews.helpfulCount, notHelpful: capsuleReviews.notHelpfulCount })
    .from(capsuleReviews)
    .where(eq(capsuleReviews.id, reviewId));
  return { reviewId, helpful, counts: counts ?? { helpful: 0, notHelpful: 0 } };
}
