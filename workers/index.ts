import { app } from "./api/app";
import { database } from "./shared/db/client";
import { flushOutbox } from "./shared/events/outbox";
import { publishPendingApprovals } from "./shared/marketplace/submissions";

export { ProjectCoordinator } from "../durable-objects/project-coordinator";

export default {
  fetch: app.fetch,

  /** Every minute: re-send outbox events whose hand-off did not finish, publish approvals left half-way. */
  async scheduled(_controller, env, ctx) {
    const db = database(env.DB);
    ctx.waitUntil(
      Promise.all([flushOutbox(db, env, { olderThanMs: 30_000 }), publishPendingApprovals(env, db)]).then(
        () => undefined,
      ),
    );
  },
} satisfies ExportedHandler<Env>;
