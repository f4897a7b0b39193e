import { migrateSqlSchema, type SqlMigration } from "./sql-migrations";

/**
 * Versioned SQL for the ProjectCoordinator's SQLite storage: one row per task, edge, attempt, budget entry,
 * review and event. Each migration runs once, in order, inside the constructor's blockConcurrencyWhile.
 */
const MIGRATIONS: SqlMigration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE project (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        owner_handle TEXT NOT NULL,
        status TEXT NOT NULL,
        limit_tokens INTEGER NOT NULL,
        max_parallel INTEGER NOT NULL,
        quality_threshold REAL NOT NULL,
        auto_remediations INTEGER NOT NULL,
        accept_permissions TEXT NOT NULL,
        reviewer TEXT,
        failure_reason TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT
      );
      CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        capsule TEXT NOT NULL,
        version TEXT NOT NULL,
        runtime TEXT NOT NULL,
        permissions TEXT NOT NULL,
        inputs TEXT NOT NULL,
        token_estimate INTEGER NOT NULL,
        success_criteria TEXT NOT NULL,
        is_plan INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        remediations INTEGER NOT NULL DEFAULT 0,
        score REAL,
        feedback TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE INDEX tasks_status ON tasks(status, seq);
      CREATE TABLE edges (
        task_id TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        PRIMARY KEY (task_id, depends_on)
      );
      CREATE INDEX edges_depends_on ON edges(depends_on);
      CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL,
        reserved_tokens INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        output_key TEXT,
        dispatched_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        lease_until INTEGER
      );
      CREATE INDEX attempts_task ON attempts(task_id, n);
      CREATE INDEX attempts_status ON attempts(status);
      CREATE TABLE budget_entries (
        attempt_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (attempt_id, kind)
      );
      CREATE TABLE reviews (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        attempt_id TEXT,
        kind TEXT NOT NULL,
        score REAL,
        subscores TEXT,
        decision TEXT NOT NULL,
        feedback TEXT,
        reviewer TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        task_id TEXT,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX events_unsent ON events(sent, seq);
      CREATE TABLE schedule (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        due_at INTEGER NOT NULL
      );
      CREATE INDEX schedule_due ON schedule(due_at);
    `,
  },
  {
    version: 2,
    sql: `
      ALTER TABLE project ADD COLUMN soft_pct INTEGER NOT NULL DEFAULT 80;
      ALTER TABLE project ADD COLUMN soft_alerted INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 3,
    // Tokens the capsule itself used, apart from the quality gate's: what a per-token price applies to.
    sql: "ALTER TABLE attempts ADD COLUMN capsule_tokens INTEGER NOT NULL DEFAULT 0;",
  },
  {
    version: 4,
    // The model a prompt capsule's tokens were spent on: the platform's per-model token price applies to them.
    sql: "ALTER TABLE attempts ADD COLUMN model TEXT;",
  },
  {
    version: 5,
    // Spend limits: each task's price estimate, each attempt's reserved and real spend, the project's cap.
    sql: `
      ALTER TABLE tasks ADD COLUMN price_estimate_micro_usd INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE attempts ADD COLUMN reserved_micro_usd INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE attempts ADD COLUMN spend_micro_usd INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE project ADD COLUMN max_spend_micro_usd INTEGER;
    `,
  },
  {
    version: 6,
    // The W3C trace of the request that created the project: every agent task, runner job and event carries it.
    sql: "ALTER TABLE project ADD COLUMN traceparent TEXT;",
  },
  {
    version: 7,
    // Model calls a sandboxed capsule made through ctx.llm, metered by the host as the provider reported them;
    // the part of an attempt's tokens the platform's per-model price applies to; and the queue message an
    // attempt runs for, so a duplicate message never runs the same attempt a second time.
    sql: `
      CREATE TABLE model_calls (
        id TEXT PRIMARY KEY,
        attempt_id TEXT NOT NULL,
        capsule TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE INDEX model_calls_attempt ON model_calls(attempt_id);
      ALTER TABLE attempts ADD COLUMN model_tokens INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE attempts ADD COLUMN claim TEXT;
    `,
  },
  {
    version: 8,
    // A project budget's hard share: reservations stop at limit_tokens x hard_pct / 100.
    sql: "ALTER TABLE project ADD COLUMN hard_pct INTEGER NOT NULL DEFAULT 100;",
  },
  {
    version: 9,
    // The prices the owner accepted at creation, for paid capsules a planner adds to the graph later.
    sql: "ALTER TABLE project ADD COLUMN accept_prices TEXT NOT NULL DEFAULT '[]';",
  },
  {
    version: 10,
    // Events are kept until the analytics store confirms them: sent 0 = not handed to the queue yet,
    // 1 = handed over at sent_at (ms) and sent again if unconfirmed, 2 = stored.
    sql: "ALTER TABLE events ADD COLUMN sent_at INTEGER;",
  },
  {
    version: 11,
    // How many times an unconfirmed event was sent again: each resend waits twice as long as the one before.
    sql: "ALTER TABLE events ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;",
  },
];

export function migrateCoordinatorSchema(sql: SqlStorage): void {
  migrateSqlSchema(sql, MIGRATIONS);
}
