import { migrateSqlSchema, type SqlMigration } from "./sql-migrations";

/**
 * Versioned SQL for the MetricsAggregator: one row per series (name and label set) and one per histogram bucket
 * of a series, never a blob, so a series added by a new route costs one small row.
 */
const MIGRATIONS: SqlMigration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE series (
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        sum REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (name, labels)
      );
      CREATE TABLE buckets (
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        le REAL NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, labels, le)
      );
    `,
  },
];

export function migrateMetricsAggregatorSchema(sql: SqlStorage): void {
  migrateSqlSchema(sql, MIGRATIONS);
}
