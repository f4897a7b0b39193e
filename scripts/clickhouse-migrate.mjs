/**
 * Applies the ClickHouse schema migrations in clickhouse/migrations/ (`NNNN_name.sql`, flat, numbered,
 * append-only, like D1's): creates the database when missing, then applies in order every file whose
 * number is not yet in its `schema_migrations` table, recording each. Running it again applies nothing.
 *
 *   npm run ch:migrate
 *
 * Environment: CLICKHOUSE_URL (else the server `node scripts/clickhouse.mjs start` runs for SOMA_STATE_DIR,
 * else http://127.0.0.1:8123), CLICKHOUSE_USER (default), CLICKHOUSE_PASSWORD (none), CLICKHOUSE_DATABASE
 * (soma).
 *
 * ClickHouse has no transactional DDL: a file that fails half-way is not recorded and runs again in full
 * next time, so every statement should be idempotent (`CREATE ... IF NOT EXISTS`). Only the HTTP
 * interface and SQL that 18.16 understands are used, so the same command migrates a current server, a
 * cluster or ClickHouse Cloud.
 */
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runningClickHouse } from "./clickhouse.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const MIGRATIONS_DIR = join(root, "clickhouse", "migrations");
const MIGRATION_FILE = /^(\d{4})_[A-Za-z0-9_-]+\.sql$/;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const QUERY_TIMEOUT_MS = 120_000;

/** An error answered by ClickHouse; `code` is its `Code: N`, when there is one. */
export class ClickHouseError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   */
  constructor(message, status) {
    super(message);
    this.name = "ClickHouseError";
    this.status = status;
    const code = message.match(/Code: (\d+)/);
    this.code = code ? Number(code[1]) : undefined;
  }
}

/**
 * Splits a file into statements at every `;` outside string literals, quoted identifiers and comments.
 * `--` and `/* *\/` comments are dropped; empty statements are skipped.
 * @param {string} sql
 * @returns {string[]}
 */
export function splitStatements(sql) {
  const statements = [];
  let current = "";
  const push = () => {
    const statement = current.trim();
    if (statement !== "") statements.push(statement);
    current = "";
  };
  let i = 0;
  while (i < sql.length) {
    const c = sql[i];
    const next = sql[i + 1];
    if (c === "-" && next === "-") {
      const end = sql.indexOf("\n", i);
      i = end === -1 ? sql.length : end;
    } else if (c === "/" && next === "*") {
      const end = sql.indexOf("*/", i + 2);
      if (end === -1) throw new Error("unterminated /* comment");
      current += " ";
      i = end + 2;
    } else if (c === "'" || c === '"' || c === "`") {
      let j = i + 1;
      for (;;) {
        if (j >= sql.length) throw new Error(`unterminated ${c} quote`);
        if (sql[j] === "\\") j += 2;
        else if (sql[j] === c && sql[j + 1] === c) j += 2;
        else if (sql[j] === c) break;
        else j += 1;
      }
      current += sql.slice(i, j + 1);
      i = j + 1;
    } else if (c === ";") {
      push();
      i += 1;
    } else {
      current += c;
      i += 1;
    }
  }
  push();
  return statements;
}

/**
 * The migration files in order.
 * @param {string} [dir]
 * @returns {Promise<{ version: string, file: string, path: string }[]>}
 */
export async function migrationFiles(dir = MIGRATIONS_DIR) {
  const names = (await readdir(dir)).filter((name) => name.endsWith(".sql")).sort();
  const seen = new Map();
  return names.map((file) => {
    const match = file.match(MIGRATION_FILE);
    if (!match?.[1]) throw new Error(`${file}: a migration file is named NNNN_name.sql`);
    const version = match[1];
    if (seen.has(version)) throw new Error(`${file} and ${seen.get(version)} share the number ${version}`);
    seen.set(version, file);
    return { version, file, path: join(dir, file) };
  });
}

/**
 * Runs one statement over ClickHouse's HTTP interface (POST body) and returns the response text.
 * @param {{ url: string, user?: string, password?: string }} connection
 * @param {string} query
 * @param {string} [database]
 */
export async function execute({ url, user = "default", password = "" }, query, database) {
  const target = new URL(url);
  if (database) target.searchParams.set("database", database);
  let response;
  try {
    response = await fetch(target, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`,
        "content-type": "text/plain; charset=utf-8",
      },
      body: query,
      signal: AbortSignal.timeout(QUERY_TIMEOUT_MS),
    });
  } catch (error) {
    throw new Error(
      `ClickHouse at ${target.origin} is unreachable: ${error.cause?.message ?? error.message}`,
    );
  }
  const text = await response.text();
  if (!response.ok) throw new ClickHouseError(text.trim() || `HTTP ${response.status}`, response.status);
  return text;
}

/**
 * Brings a database up to the latest migration.
 * @param {{ url: string, user?: string, password?: string, database?: string, dir?: string,
 *   log?: (message: string) => void }} options
 * @returns {Promise<{ applied: string[], current: string[] }>} the versions applied now, and all recorded
 */
export async function migrate({
  url,
  user = "default",
  password = "",
  database = "soma",
  dir,
  log = () => {},
}) {
  if (!IDENTIFIER.test(database)) throw new Error(`"${database}" is not a plain database name`);
  const connection = { url, user, password };
  const files = await migrationFiles(dir);

  await execute(connection, `CREATE DATABASE IF NOT EXISTS \`${database}\``);
  await execute(
    connection,
    "CREATE TABLE IF NOT EXISTS schema_migrations (version String, applied_at DateTime) ENGINE = MergeTree ORDER BY version",
    database,
  );
  const recorded = new Set(
    (
      await execute(
        connection,
        "SELECT DISTINCT version FROM schema_migrations FORMAT TabSeparated",
        database,
      )
    )
      .split("\n")
      .filter(Boolean),
  );

  const applied = [];
  for (const { version, file, path } of files) {
    if (recorded.has(version)) continue;
    const statements = splitStatements(await readFile(path, "utf8"));
    for (const [index, statement] of statements.entries()) {
      try {
        await execute(connection, statement, database);
      } catch (error) {
        throw new Error(`${file}, statement ${index + 1} of ${statements.length}: ${error.message}`);
      }
    }
    await execute(
      connection,
      `INSERT INTO schema_migrations (version, applied_at) VALUES ('${version}', now())`,
      database,
    );
    recorded.add(version);
    applied.push(version);
    log(`applied ${file}`);
  }
  return { applied, current: [...recorded].sort() };
}

async function cli() {
  const stateDir = resolve(root, process.env.SOMA_STATE_DIR || ".state");
  const url = process.env.CLICKHOUSE_URL || runningClickHouse(stateDir)?.url || "http://127.0.0.1:8123";
  const database = process.env.CLICKHOUSE_DATABASE || "soma";
  const { applied, current } = await migrate({
    url,
    user: process.env.CLICKHOUSE_USER || "default",
    password: process.env.CLICKHOUSE_PASSWORD ?? "",
    database,
    log: (message) => console.log(`[ch:migrate] ${message}`),
  });
  const at = `${new URL(url).origin}, database ${database}`;
  console.log(
    applied.length > 0
      ? `[ch:migrate] applied ${applied.length} migration(s) on ${at}; now at ${current.at(-1)}`
      : `[ch:migrate] ${at} is up to date (${current.at(-1) ?? "no migrations"})`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  cli().catch((error) => {
    console.error(`[ch:migrate] ${error.message}`);
    process.exit(1);
  });
}
