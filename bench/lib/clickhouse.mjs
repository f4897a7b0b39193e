import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startClickHouse } from "../../scripts/clickhouse.mjs";
import { migrate } from "../../scripts/clickhouse-migrate.mjs";

const QUERY_TIMEOUT_MS = 60_000;

/**
 * A ClickHouse server of its own for one bench run: Debian's clickhouse-server on a free 127.0.0.1 port, its
 * data in a temp directory, migrated with the project's migrations (scripts/clickhouse-migrate.mjs). The
 * `bindings` go to the Worker as its ClickHouse vars.
 * @param {{ database?: string, log?: (message: string) => void }} [options]
 */
export async function startBenchClickHouse({ database = "soma", log = () => {} } = {}) {
  const stateDir = await mkdtemp(join(tmpdir(), "soma-bench-ch-"));
  let server;
  try {
    server = await startClickHouse({ stateDir, httpPort: 0, log });
    const { applied } = await migrate({ url: server.url, database, log: () => {} });
    const query = (sql, db = database) => clickHouseQuery(server.url, sql, db);
    return {
      url: server.url,
      pid: server.pid,
      database,
      migrations: applied,
      bindings: { CLICKHOUSE_URL: server.url, CLICKHOUSE_DATABASE: database, CLICKHOUSE_USER: "default" },
      query,
      /** The rows of a SELECT, parsed from JSONEachRow. */
      async rows(sql, db = database) {
        const text = await query(`${sql} FORMAT JSONEachRow`, db);
        return text
          .split("\n")
          .filter(Boolean)
          .map((line) => JSON.parse(line));
      },
      async stop() {
        await server.stop();
        await rm(stateDir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await server?.stop();
    await rm(stateDir, { recursive: true, force: true });
    throw error;
  }
}

/** One statement over the HTTP interface; the answer as text. */
export async function clickHouseQuery(url, sql, database) {
  const response = await fetch(`${url}/?database=${encodeURIComponent(database)}`, {
    method: "POST",
    body: sql,
    signal: AbortSignal.timeout(QUERY_TIMEOUT_MS),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`ClickHouse ${response.status}: ${text.slice(0, 500)}`);
  return text;
}
