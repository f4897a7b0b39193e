import { DurableObject } from "cloudflare:workers";
import { migrateCoordinatorSchema } from "./project-coordinator.schema";

/**
 * One KAMACHIQ project: its task graph, agent attempts and budget counters, in SQLite rows.
 * The autonomous mode fills in planning and dispatch; the schema below is versioned and idempotent.
 */
export class ProjectCoordinator extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => migrateCoordinatorSchema(ctx.storage.sql));
  }

  /** The schema version this coordinator runs on (lets callers and tests see migrations applied). */
  schemaVersion(): number {
    const row = this.ctx.storage.sql
      .exec<{ version: number }>("SELECT max(version) AS version FROM schema_version")
      .one();
    return row.version;
  }
}
