import { app } from "./api/app";
import { handleAgentTasks } from "./consumers/agent-tasks";
import { handleDeadLetters } from "./consumers/dead-letters";
import { handleEvents } from "./consumers/events";
import { handleWebhookDeliveries } from "./consumers/webhooks";
import { retentionDaysFrom, runRetention } from "./shared/analytics/retention";
import { database } from "./shared/db/client";
import { flushOutbox } from "./shared/events/outbox";
import { publishPendingApprovals } from "./shared/marketplace/submissions";

export { AccountBudget } from "../durable-objects/account-budget";
export { ProjectCoordinator } from "../durable-objects/project-coordinator";
export { CapsuleHost } from "./entrypoints/capsule-host";

const RETENTION_CRON = "17 3 * * *";

export default {
  fetch: app.fetch,

  /** Dispatches by queue name (environments prefix names, so match on the suffix). */
  async queue(batch, env, ctx) {
    if (batch.queue.endsWith("soma-agent-tasks")) return handleAgentTasks(batch, env, ctx);
    if (batch.queue.endsWith("soma-events")) return handleEvents(batch, env);
    if (batch.queue.endsWith("soma-webhooks")) return handleWebhookDeliveries(batch, env);
    if (batch.queue.endsWith("-dlq")) return handleDeadLetters(batch, env);
    console.error(JSON.stringify({ level: "error", msg: "no consumer for queue", queue: batch.queue }));
    batch.retryAll();
  },

  /**
   * Every minute: re-send outbox events whose hand-off did not finish, publish approvals left half-way.
   * Daily: archive raw analytics days past retention to R2 and drop them from ClickHouse.
   */
  async scheduled(controller, env, ctx) {
    if (controller.cron === RETENTION_CRON) {
      ctx.waitUntil(
        runRetention(env, { retentionDays: retentionDaysFrom(env) }).then(
          (result) => console.log(JSON.stringify({ level: "info", msg: "retention", ...result })),
          (error) =>
            console.error(JSON.stringify({ level: "error", msg: "retention failed", error: String(error) })),
        ),
      );
      return;
    }
    const db = database(env.DB);
    ctx.waitUntil(
      Promise.all([flushOutbox(db, env, { olderThanMs: 30_000 }), publishPendingApprovals(env, db)]).then(
        () => undefined,
      ),
    );
  },
} satisfies ExportedHandler<Env>;
