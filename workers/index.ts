import { app } from "./api/app";
import { handleAgentTasks } from "./consumers/agent-tasks";
import { handleDeadLetters } from "./consumers/dead-letters";
import { handleEvents } from "./consumers/events";
import { handleWebhookDeliveries } from "./consumers/webhooks";
import { resendSpooled } from "./shared/analytics/ingest";
import { retentionDaysFrom, runRetention } from "./shared/analytics/retention";
import { database } from "./shared/db/client";
import { flushOutbox, pruneOutbox } from "./shared/events/outbox";
import { publishPendingApprovals } from "./shared/marketplace/submissions";
import { Logger, setDefaultLogLevel } from "./shared/observability/logger";
import { recordMetrics } from "./shared/observability/metrics-client";

export { AccountBudget } from "../durable-objects/account-budget";
export { MetricsAggregator } from "../durable-objects/metrics-aggregator";
export { ProjectCoordinator } from "../durable-objects/project-coordinator";
export { CapsuleHost } from "./entrypoints/capsule-host";

const RETENTION_CRON = "17 3 * * *";
const QUEUES = ["soma-agent-tasks", "soma-events", "soma-webhooks"] as const;

/** The queue's name without an environment prefix, so metrics of every environment share label values. */
function queueLabel(name: string): string {
  if (name.endsWith("-dlq")) return "dead-letters";
  return QUEUES.find((queue) => name.endsWith(queue)) ?? "other";
}

export default {
  fetch(request, env, ctx) {
    setDefaultLogLevel(env.LOG_LEVEL);
    return app.fetch(request, env, ctx);
  },

  /** Dispatches by queue name (environments prefix names, so match on the suffix). */
  async queue(batch, env, ctx) {
    setDefaultLogLevel(env.LOG_LEVEL);
    const queue = queueLabel(batch.queue);
    const now = Date.now();
    recordMetrics(
      env,
      ctx,
      batch.messages.flatMap((message) => [
        { name: "queue_messages_total" as const, labels: { queue }, value: 1 },
        {
          name: "queue_lag_seconds" as const,
          labels: { queue },
          value: Math.max(0, (now - message.timestamp.getTime()) / 1000),
        },
      ]),
    );
    if (batch.queue.endsWith("soma-agent-tasks")) return handleAgentTasks(batch, env, ctx);
    if (batch.queue.endsWith("soma-events")) return handleEvents(batch, env, ctx);
    if (batch.queue.endsWith("soma-webhooks")) return handleWebhookDeliveries(batch, env);
    if (batch.queue.endsWith("-dlq")) return handleDeadLetters(batch, env);
    new Logger({ component: "consumer" }).error("no consumer for queue", { queue: batch.queue });
    batch.retryAll();
  },

  /**
   * Every minute: re-send outbox events and spooled ingestion messages the analytics store has not confirmed,
   * publish approvals left half-way.
   * Daily: archive raw analytics days past retention to R2 and drop them from ClickHouse.
   */
  async scheduled(controller, env, ctx) {
    setDefaultLogLevel(env.LOG_LEVEL);
    const log = new Logger({ component: "cron", cron: controller.cron });
    if (controller.cron === RETENTION_CRON) {
      ctx.waitUntil(
        runRetention(env, { retentionDays: retentionDaysFrom(env) }).then(
          (result) => log.info("retention", { ...result }),
          (error) => log.error("retention failed", { error }),
        ),
      );
      return;
    }
    const db = database(env.DB);
    ctx.waitUntil(
      Promise.all([
        flushOutbox(db, env, { olderThanMs: 30_000 }).then(() => pruneOutbox(db)),
        resendSpooled(env),
        publishPendingApprovals(env, db),
      ]).then(
        () => undefined,
        (error) => log.error("cron recovery failed", { error }),
      ),
    );
  },
} satisfies ExportedHandler<Env>;
