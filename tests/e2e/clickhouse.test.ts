import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import {
  type RunningClickHouse,
  runningClickHouse,
  startClickHouse,
  stopClickHouse,
} from "../../scripts/clickhouse.mjs";
import { execute, migrate, migrationFiles, splitStatements } from "../../scripts/clickhouse-migrate.mjs";
import { freePort, isAlive } from "../../scripts/lib/processes.mjs";

describe("splitting a migration file into statements", () => {
  it("splits at semicolons and drops comments and empty statements", () => {
    const sql = `-- A table; with a comment
CREATE TABLE a (x String) ENGINE = MergeTree ORDER BY x; -- trailing; comment
/* block; comment */
CREATE TABLE b (y UInt8) ENGINE = MergeTree ORDER BY y;
;
`;
    expect(splitStatements(sql)).toEqual([
      "CREATE TABLE a (x String) ENGINE = MergeTree ORDER BY x",
      "CREATE TABLE b (y UInt8) ENGINE = MergeTree ORDER BY y",
    ]);
  });

  it("keeps semicolons and comment markers inside strings and quoted identifiers", () => {
    const sql = "SELECT 'a;\n-- b', 'it''s;', 'c\\';' AS `x;y`, \"p;q\" FROM t;\nSELECT 2";
    expect(splitStatements(sql)).toEqual([
      "SELECT 'a;\n-- b', 'it''s;', 'c\\';' AS `x;y`, \"p;q\" FROM t",
      "SELECT 2",
    ]);
  });

  it("refuses an unterminated string rather than guessing", () => {
    expect(() => splitStatements("SELECT 'oops;\nSELECT 1;")).toThrow("unterminated ' quote");
  });

  it("finds the repository's migrations in order, numbered from 0001", async () => {
    const versions = (await migrationFiles()).map((m) => m.version);
    expect(versions.slice(0, 2)).toEqual(["0001", "0002"]);
    expect([...versions].sort()).toEqual(versions);
  });
});

describe("npm run ch:migrate (migrate)", () => {
  const clickhouseUrl = inject("clickhouseUrl");
  const databases: string[] = [];

  afterAll(async () => {
    for (const database of databases)
      await execute({ url: clickhouseUrl }, `DROP DATABASE IF EXISTS ${database}`);
  });

  it.skipIf(!clickhouseUrl)(
    "creates the database, applies every migration once and nothing the second time",
    async () => {
      const database = `e2e_${randomBytes(6).toString("hex")}`;
      databases.push(database);
      const all = (await migrationFiles()).map((m) => m.version);

      const first = await migrate({ url: clickhouseUrl, database });
      expect(first).toEqual({ applied: all, current: all });
      const second = await migrate({ url: clickhouseUrl, database });
      expect(second).toEqual({ applied: [], current: all });

      const tables = await execute({ url: clickhouseUrl }, `SHOW TABLES FROM ${database}`);
      expect(tables.split("\n")).toEqual(
        expect.arrayContaining(["events", "schema_migrations", "usage_hourly", "usage_hourly_mv"]),
      );
      const rows = await execute({ url: clickhouseUrl }, "SELECT count() FROM schema_migrations", database);
      expect(Number(rows)).toBe(all.length);
    },
  );

  it.skipIf(!clickhouseUrl)(
    "names the file and statement that failed, and records nothing for it",
    async () => {
      const database = `e2e_${randomBytes(6).toString("hex")}`;
      databases.push(database);
      const dir = await mkdtemp(path.join(tmpdir(), "soma-e2e-migrations-"));
      try {
        await writeFile(
          path.join(dir, "0001_ok.sql"),
          "CREATE TABLE IF NOT EXISTS ok (x String) ENGINE = Log;\n",
        );
        await writeFile(
          path.join(dir, "0002_broken.sql"),
          "CREATE TABLE IF NOT EXISTS fine (x String) ENGINE = Log;\nCREATE TABLE nope (x NoSuchType) ENGINE = Log;\n",
        );
        await expect(migrate({ url: clickhouseUrl, database, dir })).rejects.toThrow(
          /0002_broken\.sql, statement 2 of 2: Code: 50/,
        );
        const recorded = await execute(
          { url: clickhouseUrl },
          "SELECT version FROM schema_migrations",
          database,
        );
        expect(recorded.trim()).toBe("0001");
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});

describe("scripts/clickhouse.mjs", () => {
  const scratch: string[] = [];
  const servers: RunningClickHouse[] = [];
  const stateDir = async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "soma-e2e-clickhouse-"));
    scratch.push(dir);
    return dir;
  };

  afterAll(async () => {
    for (const server of servers) await server.stop();
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it("starts a server on 127.0.0.1 with everything under the state directory, and stops it by pid", async () => {
    const dir = await stateDir();
    const server = await startClickHouse({ stateDir: dir });
    servers.push(server);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await (await fetch(`${server.url}/ping`)).text()).toBe("Ok.\n");
    expect(await execute(server, "SELECT timezone()")).toMatch(/UTC/);
    const config = await readFile(path.join(dir, "clickhouse", "config.xml"), "utf8");
    for (const tag of ["path", "tmp_path", "user_files_path", "format_schema_path", "log", "errorlog"]) {
      expect(config).toContain(`<${tag}>${dir}/clickhouse/`);
    }
    expect(config).not.toContain("<tcp_port>");
    expect(runningClickHouse(dir)).toEqual({ pid: server.pid, url: server.url, port: server.port });

    expect(await stopClickHouse(server.pid)).toBe(true);
    expect(isAlive(server.pid)).toBe(false);
    expect(runningClickHouse(dir)).toBeNull();
  });

  it("replaces a server left running on the same state directory, keeping its data", async () => {
    const dir = await stateDir();
    const first = await startClickHouse({ stateDir: dir });
    servers.push(first);
    await execute(first, "CREATE TABLE kept (x String) ENGINE = Log");
    await execute(first, "INSERT INTO kept VALUES ('still here')");

    const second = await startClickHouse({ stateDir: dir });
    servers.push(second);
    expect(isAlive(first.pid)).toBe(false);
    expect(await execute(second, "SELECT x FROM kept")).toBe("still here\n");
    expect(await second.stop()).toBe(true);
  });

  it("requires the password when one is set", async () => {
    const server = await startClickHouse({ stateDir: await stateDir(), password: "s3cret&<more>" });
    servers.push(server);
    await expect(execute(server, "SELECT 1")).rejects.toMatchObject({ code: 194 });
    expect(await execute({ ...server, password: "s3cret&<more>" }, "SELECT 1")).toBe("1\n");
    await server.stop();
  });

  it("refuses a port something else listens on", async () => {
    const port = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(port, "127.0.0.1", resolve));
    try {
      await expect(startClickHouse({ stateDir: await stateDir(), httpPort: port })).rejects.toThrow(
        `Port ${port} on 127.0.0.1 is already in use`,
      );
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});
