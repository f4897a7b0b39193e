import { migrateSqlSchema, type SqlMigration } from "./sql-migrations";

/** Versioned SQL for an AccountBudget's SQLite storage: config, one row per reservation, alerts per period. */
const MIGRATIONS: SqlMigration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE config (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        account_id TEXT NOT NULL,
        limit_tokens INTEGER,
        limit_micro_usd INTEGER,
        period TEXT NOT NULL,
        soft_pct INTEGER NOT NULL,
        hard_pct INTEGER NOT NULL,
        rollover INTEGER NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE TABLE reservations (
        attempt_id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        period TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        settled INTEGER NOT NULL DEFAULT 0,
        spent_tokens INTEGER NOT NULL DEFAULT 0,
        spent_micro_usd INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX reservations_period ON reservations(period, settled);
      CREATE TABLE alerts (
        period TEXT NOT NULL,
        level TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (period, level)
      );
    `,
  },
  {
    version: 2,
    // The spend each reservation holds against a monthly money limit until it settles.
    sql: "ALTER TABLE reservations ADD COLUMN micro_usd INTEGER NOT NULL DEFAULT 0;",
  },
];

export function migrateAccountBudgetSchema(sql: SqlStorage): void {
  migrateSqlSchema(sql, MIGRATIONS);
}
