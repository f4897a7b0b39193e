import { executeAttempt, withDependencyOutputs } from "../shared/agents/execute";
import { enqueueRunnerJob } from "../shared/agents/runner-jobs";
import { database } from "../shared/db/client";
import { coordinator } from "../shared/kamachiq/coordinator-client";
import { agentTaskMessageSchema } from "../shared/kamachiq/types";
import { loadPublishedBundle } from "../shared/marketplace/verified-bundles";
import { Logger, traceFields } from "../shared/observability/logger";
import { continueTrace, formatTraceparent } from "../shared/observability/trace";

/** Runner jobs get this long before the runner must report (its lease is renewed by heartbeats). */
const RUNNER_TIMEOUT_SECONDS = 300;

/**
 * The agents: each message names one attempt. The coordinator hands out its context, the capsule runs in a
 * sandbox (or goes to a runner), the gate scores it, and the coordinator settles it exactly once. Malformed
 * messages go to the dead-letter queue at once; infrastructure failures are retried with backoff.
 */
export async function handleAgentTasks(
  batch: MessageBatch<unknown>,
  env: Env,
  ctx: ExecutionContext,
): Promise<void> {
  const db = database(env.DB);
  const base = new Logger({ component: "consumer", queue: batch.queue });
  await Promise.all(
    batch.messages.map(async (message) => {
      const parsed = agentTaskMessageSchema.safeParse(message.body);
      if (!parsed.success) {
        base.error("poison agent-task message", { requestId: message.id });
        await env.AGENT_TASKS_DLQ.send({ reason: "invalid message", body: message.body as never });
        message.ack();
        return;
      }
      const { projectId, attemptId } = parsed.data;
      // This delivery is a span of the project's trace; what it hands on (a runner job) continues this span.
      const trace = continueTrace(parsed.data.traceparent);
      const log = base.child({ requestId: message.id, ...traceFields(trace), projectId, attemptId });
      try {
        const stub = coordinator(env, projectId);
        const started = await stub.startAttempt(attemptId, message.id);
        if (!started.ok) {
          // Finished, cancelled or unknown: a duplicate or stale delivery, nothing to do.
          log.info("agent attempt skipped", { reason: started.code });
          message.ack();
          return;
        }
        const attempt = started.value;
        if (attempt.runtime === "runner") {
          const { record } = await loadPublishedBundle(env, db, attempt.capsule, attempt.version);
          await enqueueRunnerJob(db, attempt.ownerId, {
            attemptId,
            projectId,
            taskId: attempt.taskId,
            capsule: attempt.capsule,
            version: attempt.version,
            bundlePath: `/v1/capsules/${attempt.capsule}/versions/${attempt.version}/bundle`,
            sha256: record.sha256,
            input: await withDependencyOutputs(env, attempt.input),
            reservedTokens: attempt.reservedTokens,
            timeoutSeconds: RUNNER_TIMEOUT_SECONDS,
            maxOutputBytes: 256 * 1024,
            permissions: attempt.permissions,
            traceparent: formatTraceparent(trace),
          });
          log.info("runner job queued", { taskId: attempt.taskId, capsule: attempt.capsule });
          message.ack();
          return;
        }
        const outcome = await executeAttempt(env, db, (props) => ctx.exports.CapsuleHost({ props }), attempt);
        await stub.settleAttempt(attemptId, outcome);
        log.info("agent attempt settled", {
          taskId: attempt.taskId,
          capsule: `${attempt.capsule}@${attempt.version}`,
          runtime: attempt.runtime,
          status: outcome.status,
          ...(outcome.status === "failed" ? { code: outcome.error.code } : {}),
        });
        message.ack();
      } catch (error) {
        log.error("agent attempt failed", { attempts: message.attempts, error });
        message.retry({ delaySeconds: Math.min(60, 2 ** message.attempts) });
      }
    }),
  );
}
