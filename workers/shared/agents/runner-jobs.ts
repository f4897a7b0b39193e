import { and, eq, or, sql } from "drizzle-orm";
import { type Database, nowIso } from "../db/client";
import { runnerJobs } from "../db/schema";
import { AppError } from "../errors";

/** What a runner receives when it claims a job. */
export interface RunnerJob {
  attemptId: string;
  projectId: string;
  taskId: string;
  capsule: string;
  version: string;
  /** Path of the signed bundle under the API (`GET` it, then check `sha256` before running anything). */
  bundlePath: string;
  sha256: string;
  input: Record<string, unknown>;
  reservedTokens: number;
  timeoutSeconds: number;
  maxOutputBytes: number;
  permissions: string[];
  /** The project's W3C trace: the runner logs it and sends it back on its heartbeats and report. */
  traceparent?: string;
}

/** Queues a runner job for an attempt; a redelivered message finds the job already there. */
export async function enqueueRunnerJob(db: Database, ownerId: string, job: RunnerJob): Promise<void> {
  await db
    .insert(runnerJobs)
    .values({
      attemptId: job.attemptId,
      projectId: job.projectId,
      taskId: job.taskId,
      ownerId,
      payload: JSON.stringify(job),
      status: "queued",
      createdAt: nowIso(),
    })
    .onConflictDoNothing();
}

/**
 * Claims the oldest job that is queued, or whose runner let its lease run out, in one atomic statement.
 * Admins' runners serve every project; others serve their own projects only.
 */
export async function claimRunnerJob(
  db: Database,
  runnerId: string,
  ownerId: string | null,
  leaseMs: number,
): Promise<(RunnerJob & { leaseUntil: string; claims: number }) | null> {
  const now = nowIso();
  const lease = new Date(Date.now() + leaseMs).toISOString();
  const owner = ownerId === null ? sql`1 = 1` : sql`owner_id = ${ownerId}`;
  const rows = await db.all<{ payload: string; lease_until: string; claims: number }>(sql`
    UPDATE runner_jobs SET status = 'claimed', runner_id = ${runnerId}, lease_until = ${lease}, claims = claims + 1
    WHERE attempt_id = (
      SELECT attempt_id FROM runner_jobs
      WHERE ${owner} AND (status = 'queued' OR (status = 'claimed' AND lease_until < ${now}))
      ORDER BY created_at LIMIT 1
    )
    RETURNING payload, lease_until, claims`);
  const row = rows[0];
  if (!row) return null;
  return { ...(JSON.parse(row.payload) as RunnerJob), leaseUntil: row.lease_until, claims: row.claims };
}

async function heldJob(db: Database, attemptId: string, runnerId: string) {
  const [job] = await db.select().from(runnerJobs).where(eq(runnerJobs.attemptId, attemptId)).limit(1);
  if (!job) throw new AppError("NOT_FOUND", `No runner job ${attemptId}`);
  if (job.status !== "claimed" || job.runnerId !== runnerId) {
    throw new AppError("INVALID_STATE", `Job ${attemptId} is not held by runner ${runnerId}`, {
      status: job.status,
    });
  }
  return job;
}

/** Extends a held job's lease. */
export async function heartbeatRunnerJob(
  db: Database,
  attemptId: string,
  runnerId: string,
  leaseMs: number,
): Promise<string> {
  await heldJob(db, attemptId, runnerId);
  const lease = new Date(Date.now() + leaseMs).toISOString();
  await db
    .update(runnerJobs)
    .set({ leaseUntil: lease })
    .where(and(eq(runnerJobs.attemptId, attemptId), eq(runnerJobs.runnerId, runnerId)));
  return lease;
}

/** Checks the caller still holds the job, then returns its payload for settlement. */
export async function jobForCompletion(db: Database, attemptId: string, runnerId: string) {
  const job = await heldJob(db, attemptId, runnerId);
  return { ...job, payload: JSON.parse(job.payload) as RunnerJob };
}

export async function markRunnerJobDone(
  db: Database,
  attemptId: string,
  status: "succeeded" | "failed",
): Promise<void> {
  await db
    .update(runnerJobs)
    .set({ status, finishedAt: nowIso(), leaseUntil: null })
    .where(
      and(
        eq(runnerJobs.attemptId, attemptId),
        or(eq(runnerJobs.status, "claimed"), eq(runnerJobs.status, "queued")),
      ),
    );
}

/** Hands a claimed job back to the queue at once (a runner stopping before it started the work). */
export async function releaseRunnerJob(db: Database, attemptId: string): Promise<void> {
  await db
    .update(runnerJobs)
    .set({ status: "queued", runnerId: null, leaseUntil: null })
    .where(and(eq(runnerJobs.attemptId, attemptId), eq(runnerJobs.status, "claimed")));
}
