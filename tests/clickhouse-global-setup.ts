import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { startClickHouse } from "../scripts/clickhouse.mjs";
import { migrate } from "../scripts/clickhouse-migrate.mjs";

/** Where the Workers tests find ClickHouse; vitest.config.ts passes it to the Worker as its CLICKHOUSE_* bindings. */
export interface ClickHouseTestServer {
  url: string;
  user: string;
  password: string;
  /** Migrated once per run and shared: tests keep apart by using their own account ids. */
  database: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    clickhouse: ClickHouseTestServer;
  }
}

/**
 * Node side of the Workers tests: one ClickHouse for the whole run, on a free port with its data in a
 * temporary folder, migrated once. CLICKHOUSE_TEST_URL (with CLICKHOUSE_TEST_USER and
 * CLICKHOUSE_TEST_PASSWORD) runs the tests against another server instead, e.g. a current ClickHouse.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.CLICKHOUSE_TEST_URL;
  if (external) {
    const server: ClickHouseTestServer = {
      url: external.replace(/\/+$/, ""),
      user: process.env.CLICKHOUSE_TEST_USER || "default",
      password: process.env.CLICKHOUSE_TEST_PASSWORD ?? "",
      database: "soma",
    };
    await migrate(server);
    project.provide("clickhouse", server);
    return async () => {};
  }

  const stateDir = await mkdtemp(path.join(tmpdir(), "soma-test-clickhouse-"));
  const cleanUp = async (stop?: () => Promise<boolean>) => {
    await stop?.();
    await rm(stateDir, { recursive: true, force: true });
  };
  let running: Awaited<ReturnType<typeof startClickHouse>>;
  try {
    running = await startClickHouse({ stateDir });
  } catch (error) {
    await cleanUp();
    throw error;
  }
  const server: ClickHouseTestServer = { url: running.url, user: "default", password: "", database: "soma" };
  try {
    await migrate(server);
  } catch (error) {
    await cleanUp(running.stop);
    throw error;
  }
  project.provide("clickhouse", server);
  return () => cleanUp(running.stop);
}
