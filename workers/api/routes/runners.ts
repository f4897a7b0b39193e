import { Hono } from "hono";
import { z } from "zod";
import { artifactKey, checkArtifactPath, MAX_ARTIFACT_BYTES } from "../../shared/agents/capabilities";
import { runGate } from "../../shared/agents/execute";
import {
  claimRunnerJob,
  heartbeatRunnerJob,
  jobForCompletion,
  markRunnerJobDone,
  releaseRunnerJob,
} from "../../shared/agents/runner-jobs";
import { requirePrincipal } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import { AppError } from "../../shared/errors";
import { coordinator } from "../../shared/kamachiq/coordinator-client";
import { unwrap } from "../../shared/kamachiq/projects";
import { estimateTokens, type Outcome } from "../../shared/kamachiq/types";
import type { AppEnv } from "../context";
import { signedIn } from "../middleware/guards";
import { jsonBody, pathParams } from "../validate";

const runnerId = z
  .string()
  .regex(/^[A-Za-z0-9._:-]{1,100}$/, "runner ids are 1-100 letters, digits, '.', '_', ':' or '-'");
const jobParams = z.object({ attemptId: z.string().regex(/^att_[a-f0-9]{32}$/, "not an attempt id") });

const completionSchema = z
  .object({
    runnerId,
    status: z.enum(["succeeded", "failed"]),
    output: z.unknown().optional(),
    error: z
      .object({ code: z.string().max(64), message: z.string().max(4000), retryable: z.boolean() })
      .strict()
      .optional(),
    logs: z
      .string()
      .max(256 * 1024)
      .default(""),
    artifacts: z
      .array(z.object({ path: z.string().max(255), content: z.string().max(MAX_ARTIFACT_BYTES) }).strict())
      .max(200)
      .default([]),
  })
  .strict()
  .refine((b) => b.status === "succeeded" || b.error !== undefined, {
    message: "a failed job needs an error",
    path: ["error"],
  });

function leaseMs(env: Env): number {
  return Number(env.RUNNER_LEASE_MS) || 60_000;
}

/** External runner processes: claim jobs for runner capsules under a lease, heartbeat, report results. */
export const runnerRoutes = new Hono<AppEnv>()
  .post(
    "/claim",
    signedIn,
    jsonBody(z.object({ runnerId, waitSeconds: z.int().min(0).max(25).default(0) }).strict()),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { runnerId: id, waitSeconds } = c.req.valid("json");
      const owner = principal.roles.includes("admin") ? null : (principal.accountId ?? "");
      const db = database(c.env.DB);
      const deadline = Date.now() + waitSeconds * 1000;
      for (;;) {
        const job = await claimRunnerJob(db, id, owner, leaseMs(c.env));
        if (job) {
          // A job whose attempt ended without it (cancelled project, expired lease) is closed, not run.
          const live = await coordinator(c.env, job.projectId).startAttempt(job.attemptId);
          if (live.ok) return c.json({ job });
          await markRunnerJobDone(db, job.attemptId, "failed");
          continue;
        }
        if (Date.now() >= deadline) return c.body(null, 204);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    },
  )
  .post(
    "/jobs/:attemptId/heartbeat",
    signedIn,
    pathParams(jobParams),
    jsonBody(z.object({ runnerId }).strict()),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { attemptId } = c.req.valid("param");
      const { runnerId: id } = c.req.valid("json");
      const db = database(c.env.DB);
      const job = await jobForCompletion(db, attemptId, id);
      if (!principal.roles.includes("admin") && job.ownerId !== principal.accountId) {
        throw new AppError("NOT_FOUND", `No runner job ${attemptId}`);
      }
      // The coordinator's own lease on the attempt is renewed with the runner's, so a long job is never
      // declared lost while its runner still reports.
      unwrap(await coordinator(c.env, job.projectId).startAttempt(attemptId));
      const leaseUntil = await heartbeatRunnerJob(db, attemptId, id, leaseMs(c.env));
      return c.json({ leaseUntil });
    },
  )
  .post(
    "/jobs/:attemptId/release",
    signedIn,
    pathParams(jobParams),
    jsonBody(z.object({ runnerId }).strict()),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { attemptId } = c.req.valid("param");
      const db = database(c.env.DB);
      const job = await jobForCompletion(db, attemptId, c.req.valid("json").runnerId);
      if (!principal.roles.includes("admin") && job.ownerId !== principal.accountId) {
        throw new AppError("NOT_FOUND", `No runner job ${attemptId}`);
      }
      await releaseRunnerJob(db, attemptId);
      return c.json({ released: true });
    },
  )
  .post(
    "/jobs/:attemptId/complete",
    signedIn,
    pathParams(jobParams),
    jsonBody(completionSchema),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { attemptId } = c.req.valid("param");
      const body = c.req.valid("json");
      const db = database(c.env.DB);
      const job = await jobForCompletion(db, attemptId, body.runnerId);
      if (!principal.roles.includes("admin") && job.ownerId !== principal.accountId) {
        throw new AppError("NOT_FOUND", `No runner job ${attemptId}`);
      }
      const paths = body.artifacts.map((a) => checkArtifactPath(a.path));
      if (paths.length > 0 && !job.payload.permissions.includes("artifacts.write")) {
        throw new AppError(
          "FORBIDDEN",
          `PERMISSION_DENIED: ${job.payload.capsule} did not declare artifacts.write`,
        );
      }
      await Promise.all(
        body.artifacts.map((a, i) =>
          c.env.BUNDLES.put(artifactKey(job.projectId, paths[i]!), a.content, {
            customMetadata: { taskId: job.taskId, attemptId },
          }),
        ),
      );
      const stub = coordinator(c.env, job.projectId);
      const usage = {
        inputTokens: estimateTokens(job.payload.input),
        outputTokens: estimateTokens(body.output ?? body.error ?? null),
      };
      let settled: { duplicate: boolean };
      let outcome: Outcome;
      try {
        if (body.status === "failed") {
          outcome = { status: "failed", error: body.error!, usage };
        } else {
          const attempt = unwrap(await stub.startAttempt(attemptId));
          const gate = attempt.reviewer
            ? await runGate(
                c.env,
                db,
                (props) => c.executionCtx.exports.CapsuleHost({ props }),
                attempt,
                body.output ?? null,
              )
            : null;
          outcome =
            gate && !gate.ok
              ? {
                  status: "failed",
                  error: { code: "GATE_FAILED", message: gate.message, retryable: true },
                  usage,
                }
              : {
                  status: "succeeded",
                  output: body.output ?? null,
                  usage,
                  ...(gate?.ok ? { gate: gate.result, gateUsage: gate.usage } : {}),
                };
        }
        settled = unwrap(await stub.settleAttempt(attemptId, outcome));
      } catch (error) {
        // The coordinator gave up on this attempt (lease expired, project cancelled): the job is stale.
        if (error instanceof AppError) await markRunnerJobDone(db, attemptId, "failed");
        throw error;
      }
      await markRunnerJobDone(db, attemptId, body.status);
      if (body.logs.length > 0) {
        await c.env.BUNDLES.put(`projects/${job.projectId}/logs/${job.taskId}/${attemptId}.log`, body.logs, {
          httpMetadata: { contentType: "text/plain; charset=utf-8" },
        });
      }
      return c.json({ settled: !settled.duplicate, status: outcome.status });
    },
  );
