/** One step of a Durable Object's SQLite schema. */
export interface SqlMigration {
  version: number;
  sql: string;
}

/**
 * Applies, in order, the migrations above the stored schema version, recording each. Run from the constructor
 * under blockConcurrencyWhile, so an object never serves a request on an old schema.
 */
export function migrateSqlSchema(sql: SqlStorage, migrations: readonly SqlMigration[]): void {
  sql.exec(
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  const current = sql.exec<{ v: number | null }>("SELECT max(version) AS v FROM schema_version").one().v ?? 0;
  for (const migration of migrations) {
    if (migration.version <= current) continue;
    sql.exec(migration.sql);
    sql.exec(
      "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
      migration.version,
      new Date().toISOString(),
    );
  }
}
