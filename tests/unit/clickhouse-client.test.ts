import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { z } from "zod";
import { type ClickHouseEnv, insertRows, queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";

const proxy = inject("clickhouseFaultProxy");

/** The test ClickHouse reached through the fault proxy (tests/clickhouse-global-setup.ts). */
const throughProxy: ClickHouseEnv = {
  CLICKHOUSE_URL: proxy.url,
  CLICKHOUSE_DATABASE: env.CLICKHOUSE_DATABASE,
  CLICKHOUSE_USER: env.CLICKHOUSE_USER,
  CLICKHOUSE_PASSWORD: env.CLICKHOUSE_PASSWORD,
};

const token = () => crypto.randomUUID().replaceAll("-", "");

async function attempts(of: string): Promise<number> {
  const res = await fetch(`${proxy.url}/__attempts/${of}`);
  return ((await res.json()) as { attempts: number }).attempts;
}

const row = z.object({ n: z.coerce.number(), tag: z.string() });

describe("ClickHouse client: lost connections", () => {
  it("sends a read again once when its connection is lost before an answer, and returns the answer", async () => {
    const t = token();
    const rows = await queryRows(throughProxy, sql`SELECT 41 + 1 AS n, ${`drop-1-${t}`} AS tag`, row);
    expect(rows).toEqual([{ n: 42, tag: `drop-1-${t}` }]);
    expect(await attempts(t)).toBe(2);
  });

  it("gives up after the second lost connection with an upstream error, not a hang or a third try", async () => {
    const t = token();
    const failure = await queryRows(throughProxy, sql`SELECT 1 AS n, ${`drop-5-${t}`} AS tag`, row).catch(
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ code: "UPSTREAM_FAILED" });
    expect(String((failure as Error).message)).toMatch(/^Analytics store error: /);
    expect(await attempts(t)).toBe(2);
  });

  it("does not send an insert again after a lost connection (the server may have stored it)", async () => {
    const t = token();
    const failure = await insertRows(throughProxy, "fault_probe_never_created", [
      { tag: `drop-1-${t}` },
    ]).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: "UPSTREAM_FAILED" });
    expect(await attempts(t)).toBe(1);
  });

  it("answers reads through the proxy unchanged when nothing is dropped", async () => {
    const rows = await queryRows(
      throughProxy,
      sql`SELECT number AS n, 'x' AS tag FROM system.numbers LIMIT 3`,
      row,
    );
    expect(rows.map((r) => r.n)).toEqual([0, 1, 2]);
  });
});
