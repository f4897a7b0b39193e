/** Versioned SQL for the ProjectCoordinator's SQLite storage; each entry runs once, in order. */
const MIGRATIONS: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `CREATE TABLE IF NOT EXISTS project (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
          );`,
  },
];

export function migrateCoordinatorSchema(sql: SqlStorage): void {
  sql.exec(
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  const current = sql.exec<{ v: number | null }>("SELECT max(version) AS v FROM schema_version").one().v ?? 0;
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    sql.exec(migration.sql);
    sql.exec(
      "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
      migration.version,
      new Date().toISOString(),
    );
  }
}
