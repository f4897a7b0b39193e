import { and, asc, desc, eq, inArray, isNull, or, sql } from "drizzle-orm";
import { auditStatement, sealAuditLog } from "../audit/log";
import type { Principal } from "../auth/principal";
import { type Database, isUniqueViolation, nowIso } from "../db/client";
import { accounts, capsuleReviews, reviewReports } from "../db/schema";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { decodeCursor, pageOf } from "./cursor";
import { type ReviewView, refreshCapsuleRating, reviewView, visibleReview } from "./reviews";

/** Open reports that hide a review until a moderator decides. */
export const REVIEW_REPORT_THRESHOLD = 10;

const openReports = (reviewId: string) =>
  sql`(SELECT count(*) FROM review_reports WHERE review_id = ${reviewId} AND resolved_at IS NULL)`;

/**
 * Reports someone else's visible review, once per account. The report that brings the open reports to
 * REVIEW_REPORT_THRESHOLD hides the review in the same batch, pending a moderator's decision.
 */
export async function reportReview(
  db: Database,
  accountId: string,
  capsuleName: string,
  reviewId: string,
  reason: string,
): Promise<{ reviewId: string; reason: string; createdAt: string }> {
  const review = await visibleReview(db, capsuleName, reviewId);
  if (review.accountId === accountId) throw new AppError("FORBIDDEN", "You cannot report your own review");
  const createdAt = nowIso();
  try {
    await db.batch([
      db.insert(reviewReports).values({ reviewId, accountId, reason, createdAt }),
      db
        .update(capsuleReviews)
        .set({
          openReports: openReports(reviewId),
          status: sql`CASE WHEN ${capsuleReviews.status} = 'visible' AND ${openReports(reviewId)} >= ${REVIEW_REPORT_THRESHOLD}
            THEN 'hidden' ELSE ${capsuleReviews.status} END`,
        })
        .where(eq(capsuleReviews.id, reviewId)),
      outboxInsert(
        db,
        cloudEvent("soma.review.reported", capsuleName, {
          accountId,
          capsule: capsuleName,
          reviewId,
          reason,
        }),
      ),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) throw new AppError("CONFLICT", "You already reported this review");
    throw error;
  }
  return { reviewId, reason, createdAt };
}

export interface ModerationItem {
  review: ReviewView;
  openReports: number;
  reports: { reporter: { handle: string }; reason: string; createdAt: string }[];
}

/** Reviews waiting for a moderator: hidden ones first, then visible ones with open reports, most reported first. */
export async function moderationQueue(
  db: Database,
  query: { limit: number; cursor?: string | undefined },
): Promise<{ items: ModerationItem[]; nextCursor: string | null }> {
  const offset = decodeCursor(query.cursor);
  const rows = await db
    .select({ review: capsuleReviews, handle: accounts.handle })
    .from(capsuleReviews)
    .innerJoin(accounts, eq(accounts.id, capsuleReviews.accountId))
    .where(
      or(
        eq(capsuleReviews.status, "hidden"),
        and(eq(capsuleReviews.status, "visible"), sql`${capsuleReviews.openReports} > 0`),
      ),
    )
    .orderBy(
      desc(sql`${capsuleReviews.status} = 'hidden'`),
      desc(capsuleReviews.openReports),
      asc(capsuleReviews.updatedAt),
      asc(capsuleReviews.id),
    )
    .limit(query.limit + 1)
    .offset(offset);
  const page = pageOf(rows, query.limit, offset);
  const ids = page.items.map((row) => row.review.id);
  const reports =
    ids.length === 0
      ? []
      : await db
          .select({
            reviewId: reviewReports.reviewId,
            handle: accounts.handle,
            reason: reviewReports.reason,
            createdAt: reviewReports.createdAt,
          })
          .from(reviewReports)
          .innerJoin(accounts, eq(accounts.id, reviewReports.accountId))
          .where(and(inArray(reviewReports.reviewId, ids), isNull(reviewReports.resolvedAt)))
          .orderBy(asc(reviewReports.createdAt));
  return {
    items: page.items.map((row) => ({
      review: reviewView(row.review, row.handle),
      openReports: row.review.openReports,
      reports: reports
        .filter((r) => r.reviewId === row.review.id)
        .map((r) => ({ reporter: { handle: r.handle }, reason: r.reason, createdAt: r.createdAt })),
    })),
    nextCursor: page.nextCursor,
  };
}

export type ModerationDecision = "restore" | "remove";

/**
 * A moderator's decision on a review: `restore` makes it visible and closes its open reports (those reporters
 * cannot report it again); `remove` takes it down for good and out of the capsule's rating.
 */
export async function moderateReview(
  db: Database,
  moderator: Principal,
  reviewId: string,
  decision: ModerationDecision,
): Promise<ReviewView> {
  const [row] = await db
    .select({ review: capsuleReviews, handle: accounts.handle })
    .from(capsuleReviews)
    .innerJoin(accounts, eq(accounts.id, capsuleReviews.accountId))
    .where(eq(capsuleReviews.id, reviewId))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No review ${reviewId}`);
  const { review } = row;
  if (review.status === "removed")
    throw new AppError("INVALID_STATE", `Review ${reviewId} is already removed`);
  if (decision === "restore" && review.status === "visible" && review.openReports === 0) {
    throw new AppError("INVALID_STATE", `Review ${reviewId} is visible and has no open reports`);
  }
  const now = nowIso();
  const status = decision === "remove" ? "removed" : "visible";
  await db.batch([
    db
      .update(reviewReports)
      .set({ resolvedAt: now })
      .where(and(eq(reviewReports.reviewId, reviewId), isNull(reviewReports.resolvedAt))),
    db
      .update(capsuleReviews)
      .set({ status, openReports: 0, moderatedBy: moderator.accountId, moderatedAt: now })
      .where(eq(capsuleReviews.id, reviewId)),
    refreshCapsuleRating(db, review.capsuleName),
    outboxInsert(
      db,
      cloudEvent("soma.review.moderated", review.capsuleName, {
        capsule: review.capsuleName,
        reviewId,
        decision,
        authorId: review.accountId,
        moderatorId: moderator.accountId,
      }),
    ),
    auditStatement(db, {
      actor: moderator,
      action: "review.moderated",
      target: `review:${reviewId}`,
      details: { capsule: review.capsuleName, decision, authorId: review.accountId },
    }),
  ]);
  await sealAuditLog(db);
  return reviewView(
    { ...review, status, openReports: 0, moderatedBy: moderator.accountId, moderatedAt: now },
    row.handle,
  );
}
