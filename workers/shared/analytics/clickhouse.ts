import { type ClickHouseClient, createClient } from "@clickhouse/client-web";
import type { z } from "zod";
import { AppError } from "../errors";
import type { Sql } from "./sql";

export interface ClickHouseEnv {
  CLICKHOUSE_URL: string;
  CLICKHOUSE_DATABASE: string;
  CLICKHOUSE_USER: string;
  CLICKHOUSE_PASSWORD?: string;
}

const clients = new Map<string, ClickHouseClient>();

/** One client per configuration and isolate; works against 18.16, current servers and ClickHouse Cloud alike. */
export function clickhouse(env: ClickHouseEnv): ClickHouseClient {
  const key = `${env.CLICKHOUSE_URL}|${env.CLICKHOUSE_DATABASE}|${env.CLICKHOUSE_USER}`;
  let client = clients.get(key);
  if (!client) {
    client = createClient({
      url: env.CLICKHOUSE_URL,
      database: env.CLICKHOUSE_DATABASE,
      username: env.CLICKHOUSE_USER,
      password: env.CLICKHOUSE_PASSWORD ?? "",
      request_timeout: 30_000,
    });
    clients.set(key, client);
  }
  return client;
}

function upstream(error: unknown): AppError {
  const message = error instanceof Error ? error.message : String(error);
  return new AppError("UPSTREAM_FAILED", `Analytics store error: ${message.split("\n")[0]?.slice(0, 300)}`);
}

const READ_ATTEMPTS = 2;

function isStaleConnection(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /network connection lost|connection reset|socket hang up|ECONNRESET/i.test(message);
}

/** Runs a SELECT built with `sql` and validates every row with the schema (data read back is a trust boundary). */
export async function queryRows<T extends z.ZodType>(
  env: ClickHouseEnv,
  query: Sql,
  row: T,
): Promise<z.output<T>[]> {
  let rows: unknown[] = [];
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await clickhouse(env).query({ query: query.text, format: "JSONEachRow" });
      rows = await result.json();
      break;
    } catch (error) {
      // A pooled keep-alive connection the server has already closed fails at once; a read is safe to send
      // again on a fresh one.
      if (attempt < READ_ATTEMPTS && isStaleConnection(error)) continue;
      throw upstream(error);
    }
  }
  return rows.map((r) => {
    const parsed = row.safeParse(r);
    if (!parsed.success)
      throw new AppError("UPSTREAM_FAILED", `Unexpected analytics row: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  });
}

/** Inserts rows with JSONEachRow. Every column must be present: 18.16 stores zero values for omitted fields. */
export async function insertRows(
  env: ClickHouseEnv,
  table: string,
  rows: Record<string, unknown>[],
): Promise<void> {
  if (rows.length === 0) return;
  try {
    await clickhouse(env).insert({ table, values: rows, format: "JSONEachRow" });
  } catch (error) {
    throw upstream(error);
  }
}

/** Runs a statement that returns nothing (DDL, ALTER). */
export async function command(env: ClickHouseEnv, statement: Sql): Promise<void> {
  try {
    await clickhouse(env).command({ query: statement.text });
  } catch (error) {
    throw upstream(error);
  }
}
