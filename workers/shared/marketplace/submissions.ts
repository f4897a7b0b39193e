import { and, desc, eq, inArray, sql } from "drizzle-orm";
import semver from "semver";
import { auditStatement, sealAuditLog } from "../audit/log";
import type { Principal } from "../auth/principal";
import { type Database, isUniqueViolation, newId, nowIso } from "../db/client";
import { accounts, capsuleVersions, submissions } from "../db/schema";
import { type ParsedBundle, parseBundle } from "../domain/bundle";
import { namespaceOf } from "../domain/manifest";
import { AUTO_APPROVE_BELOW, assessRisk, type RiskFinding } from "../domain/risk";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { Logger } from "../observability/logger";
import { submissionBundleKey } from "../storage/bundles";
import { bundleLimits } from "./limits";
import { type PublishEnv, publishSubmission } from "./publishing";

export type SubmissionStatus = "pending_review" | "approved" | "published" | "rejected" | "changes_requested";
export type Decision = "approve" | "reject" | "request_changes";

export interface SubmissionView {
  id: string;
  name: string;
  version: string;
  status: SubmissionStatus;
  riskScore: number;
  findings: RiskFinding[];
  sha256: string;
  size: number;
  submitter: string;
  createdAt: string;
  review: {
    reviewer: string | null;
    decision: Decision | "auto_approve" | null;
    notes: string | null;
    decidedAt: string | null;
  };
}

type SubmissionRow = typeof submissions.$inferSelect;

export const AUTO_REVIEWER = "soma:auto";
export const BOOTSTRAP_REVIEWER = "soma:admin-token";

const DECISION_STATUS: Record<Decision, SubmissionStatus> = {
  approve: "approved",
  reject: "rejected",
  request_changes: "changes_requested",
};

function decisionOf(row: SubmissionRow): SubmissionView["review"]["decision"] {
  if (!row.decidedAt) return null;
  if (row.reviewerId === AUTO_REVIEWER) return "auto_approve";
  if (row.status === "rejected") return "reject";
  if (row.status === "changes_requested") return "request_changes";
  return "approve";
}

async function handlesById(db: Database, ids: string[]): Promise<Map<string, string>> {
  const wanted = ids.filter((id) => id.startsWith("acc_"));
  if (wanted.length === 0) return new Map();
  const rows = await db
    .select({ id: accounts.id, handle: accounts.handle })
    .from(accounts)
    .where(inArray(accounts.id, wanted));
  return new Map(rows.map((r) => [r.id, r.handle]));
}

async function toViews(db: Database, rows: SubmissionRow[]): Promise<SubmissionView[]> {
  const handles = await handlesById(db, [...new Set(rows.flatMap((r) => [r.accountId, r.reviewerId ?? ""]))]);
  return rows.map((row) => ({
    id: row.id,
    name: row.name,
    version: row.version,
    status: row.status as SubmissionStatus,
    riskScore: row.riskScore,
    findings: row.findings as RiskFinding[],
    sha256: row.sha256,
    size: row.size,
    submitter: handles.get(row.accountId) ?? row.accountId,
    createdAt: row.createdAt,
    review: {
      reviewer: row.reviewerId ? (handles.get(row.reviewerId) ?? row.reviewerId) : null,
      decision: decisionOf(row),
      notes: row.decisionNotes,
      decidedAt: row.decidedAt,
    },
  }));
}

async function toView(db: Database, row: SubmissionRow): Promise<SubmissionView> {
  const [view] = await toViews(db, [row]);
  return view!;
}

/** Refuses a manifest whose dependencies have no published, non-yanked version in range. */
async function checkDependenciesExist(db: Database, bundle: ParsedBundle): Promise<void> {
  const deps = Object.entries(bundle.manifest.spec.dependencies);
  if (deps.length === 0) return;
  const rows = await db
    .select({ name: capsuleVersions.name, version: capsuleVersions.version, status: capsuleVersions.status })
    .from(capsuleVersions)
    .where(
      inArray(
        capsuleVersions.name,
        deps.map(([name]) => name),
      ),
    );
  const missing = deps.filter(
    ([name, range]) =>
      !rows.some(
        (r) =>
          r.name === name &&
          r.status !== "yanked" &&
          semver.satisfies(r.version, range, { includePrerelease: false }),
      ),
  );
  if (missing.length > 0) {
    throw new AppError(
      "DEPENDENCY_NOT_FOUND",
      `No published version satisfies ${missing.map(([n, r]) => `${n}@${r}`).join(", ")}`,
      { path: "spec.dependencies", missing: missing.map(([name, range]) => ({ name, range })) },
    );
  }
}

async function assertVersionFree(db: Database, name: string, version: string): Promise<void> {
  const [published] = await db
    .select({ id: capsuleVersions.id })
    .from(capsuleVersions)
    .where(and(eq(capsuleVersions.name, name), eq(capsuleVersions.version, version)))
    .limit(1);
  if (published) {
    throw new AppError(
      "CONFLICT",
      `${name}@${version} already exists; versions are never reused, bump the version`,
      {
        path: "metadata.version",
      },
    );
  }
  const [open] = await db
    .select({ id: submissions.id })
    .from(submissions)
    .where(
      and(
        eq(submissions.name, name),
        eq(submissions.version, version),
        inArray(submissions.status, ["pending_review", "approved", "published"]),
      ),
    )
    .limit(1);
  if (open) {
    throw new AppError("CONFLICT", `${name}@${version} is already submitted (${open.id})`, {
      path: "metadata.version",
      submissionId: open.id,
    });
  }
}

/**
 * Accepts a bundle: validates it, scores its risk, stores it, and publishes at once when the risk is low.
 * Nothing is stored unless every check passes.
 */
export async function submitBundle(
  env: PublishEnv,
  db: Database,
  principal: Principal & { accountId: string; handle: string },
  bytes: Uint8Array,
): Promise<SubmissionView> {
  const bundle = await parseBundle(bytes, bundleLimits(env));
  const { name, version } = bundle.manifest.metadata;
  if (namespaceOf(name) !== principal.handle) {
    throw new AppError(
      "FORBIDDEN",
      `metadata.name "${name}" is outside your namespace; publish as ${principal.handle}/<name>`,
      { path: "metadata.name" },
    );
  }
  await assertVersionFree(db, name, version);
  await checkDependenciesExist(db, bundle);
  const risk = assessRisk(bundle.manifest, bundle.contents, bundle.size);
  const id = newId("sub");
  const now = nowIso();
  const auto = risk.score < AUTO_APPROVE_BELOW;
  const row: SubmissionRow = {
    id,
    accountId: principal.accountId,
    name,
    version,
    status: auto ? "approved" : "pending_review",
    riskScore: risk.score,
    findings: risk.findings,
    manifest: bundle.manifest as unknown as Record<string, unknown>,
    sha256: bundle.sha256,
    size: bundle.size,
    bundleKey: submissionBundleKey(id),
    reviewerId: auto ? AUTO_REVIEWER : null,
    decisionNotes: auto ? `Risk score ${risk.score} is below ${AUTO_APPROVE_BELOW}` : null,
    decidedAt: auto ? now : null,
    createdAt: now,
  };
  await env.BUNDLES.put(row.bundleKey, bytes, {
    httpMetadata: { contentType: "application/gzip" },
    sha256: bundle.sha256,
  });
  try {
    await db.batch([
      db.insert(submissions).values(row),
      outboxInsert(
        db,
        cloudEvent("soma.submission.created", `${name}@${version}`, {
          submissionId: id,
          accountId: principal.accountId,
          account: principal.handle,
          riskScore: risk.score,
          status: row.status,
        }),
      ),
    ]);
  } catch (error) {
    await env.BUNDLES.delete(row.bundleKey);
    if (isUniqueViolation(error)) throw new AppError("CONFLICT", `${name}@${version} is already submitted`);
    throw error;
  }
  if (auto) {
    await publishSubmission(env, db, row, bundle);
    row.status = "published";
  }
  return toView(db, row);
}

export async function getSubmission(db: Database, principal: Principal, id: string): Promise<SubmissionView> {
  const [row] = await db.select().from(submissions).where(eq(submissions.id, id)).limit(1);
  const mayRead =
    row &&
    (row.accountId === principal.accountId ||
      principal.roles.includes("reviewer") ||
      principal.roles.includes("admin"));
  if (!row || !mayRead) throw new AppError("NOT_FOUND", `No submission ${id}`);
  return toView(db, row);
}

export async function listOwnSubmissions(
  db: Database,
  accountId: string,
  limit: number,
): Promise<SubmissionView[]> {
  const rows = await db
    .select()
    .from(submissions)
    .where(eq(submissions.accountId, accountId))
    .orderBy(desc(submissions.createdAt))
    .limit(limit);
  return toViews(db, rows);
}

export interface ReviewQueueItem extends SubmissionView {
  manifest: Record<string, unknown>;
  /** The latest published manifest of the same capsule, for a diff; null for a first version. */
  previous: { version: string; manifest: Record<string, unknown> } | null;
}

/** Submissions waiting for a human, oldest first, with what a reviewer needs to decide. */
export async function reviewQueue(db: Database, limit: number): Promise<ReviewQueueItem[]> {
  const rows = await db
    .select()
    .from(submissions)
    .where(eq(submissions.status, "pending_review"))
    .orderBy(submissions.createdAt)
    .limit(limit);
  const views = await toViews(db, rows);
  const names = [...new Set(rows.map((r) => r.name))];
  const previous =
    names.length === 0
      ? []
      : await db
          .select({
            name: capsuleVersions.name,
            version: capsuleVersions.version,
            manifest: capsuleVersions.manifest,
          })
          .from(capsuleVersions)
          .where(inArray(capsuleVersions.name, names));
  return views.map((view, i) => {
    const prior = previous.filter((p) => p.name === view.name && semver.lt(p.version, view.version));
    const latest = prior.sort((a, b) => semver.rcompare(a.version, b.version))[0];
    return {
      ...view,
      manifest: rows[i]!.manifest,
      previous: latest ? { version: latest.version, manifest: latest.manifest } : null,
    };
  });
}

/**
 * Records a reviewer's decision on a pending submission and publishes on approval. Reviewers never decide on
 * their own capsules; a decided submission cannot be decided again.
 */
export async function decideSubmission(
  env: PublishEnv,
  db: Database,
  principal: Principal,
  id: string,
  input: { decision: Decision; notes: string },
): Promise<SubmissionView> {
  const [row] = await db.select().from(submissions).where(eq(submissions.id, id)).limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No submission ${id}`);
  if (row.accountId === principal.accountId || namespaceOf(row.name) === principal.handle) {
    throw new AppError("FORBIDDEN", "Reviewers cannot decide on their own capsules");
  }
  if (row.status !== "pending_review") {
    throw new AppError("INVALID_STATE", `Submission ${id} is ${row.status}, not pending review`, {
      status: row.status,
    });
  }
  const now = nowIso();
  const status = DECISION_STATUS[input.decision];
  const reviewerId = principal.accountId ?? BOOTSTRAP_REVIEWER;
  const [updateResult] = await db.batch([
    db
      .update(submissions)
      .set({ status, reviewerId, decisionNotes: input.notes, decidedAt: now })
      .where(and(eq(submissions.id, id), eq(submissions.status, "pending_review")))
      .returning({ id: submissions.id }),
    outboxInsert(
      db,
      cloudEvent("soma.submission.decided", `${row.name}@${row.version}`, {
        submissionId: id,
        accountId: row.accountId,
        decision: input.decision,
        reviewer: principal.handle ?? BOOTSTRAP_REVIEWER,
      }),
    ),
    auditStatement(
      db,
      {
        actor: principal,
        action: "submission.decided",
        target: `submission:${id}`,
        details: { capsule: `${row.name}@${row.version}`, decision: input.decision, notes: input.notes },
      },
      sql`EXISTS (SELECT 1 FROM submissions WHERE id = ${id} AND decided_at = ${now} AND reviewer_id = ${reviewerId})`,
    ),
  ]);
  if (updateResult.length === 0) {
    throw new AppError("INVALID_STATE", `Submission ${id} was decided by someone else just now`);
  }
  await sealAuditLog(db);
  const decided: SubmissionRow = { ...row, status, reviewerId, decisionNotes: input.notes, decidedAt: now };
  if (input.decision === "approve") {
    await publishSubmission(env, db, decided);
    decided.status = "published";
  }
  return toView(db, decided);
}

/** Publishes approved submissions whose publishing did not finish (run from the cron). */
export async function publishPendingApprovals(env: PublishEnv, db: Database): Promise<number> {
  const rows = await db
    .select()
    .from(submissions)
    .where(
      and(
        eq(submissions.status, "approved"),
        sql`${submissions.decidedAt} < ${new Date(Date.now() - 60_000).toISOString()}`,
      ),
    )
    .limit(20);
  let published = 0;
  // One submission that cannot be published must not hold back the approvals queued behind it.
  for (const row of rows) {
    try {
      await publishSubmission(env, db, row);
      published += 1;
    } catch (error) {
      new Logger({ component: "cron" }).error("publishing an approved submission failed", {
        submissionId: row.id,
        error,
      });
    }
  }
  return published;
}
