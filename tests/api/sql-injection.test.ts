import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";
import { api, grantRoles, signup } from "../helpers";

/**
 * Strings that end, escape or comment out a ClickHouse literal, or that a formatter would expand. Values are
 * bound client-side (18.16 has no server-side parameters), so each must come back from the real server
 * exactly as sent, and never match anything else.
 */
const HOSTILE = [
  "'",
  "''",
  "\\",
  "\\'",
  "\\\\'",
  "'; DROP TABLE events; --",
  "x' OR '1'='1",
  "' UNION ALL SELECT name FROM system.tables --",
  "\u0000",
  "a\u0000b'",
  "\\0",
  "line\nbreak' --",
  "\r\n\t",
  "-- comment",
  "/* block */ 1",
  "# hash",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal text of a placeholder is the point.
  "%j %s %d %% {0} ${x} ? :p {p:String}",
  "ünïcödé ☃ 🚀 漢字 \u202e",
  '"double" `back`',
] as const;

const num = z.coerce.number();

/** The database's tables and engines: a statement smuggled into a value would add, drop or alter one. */
async function tablesSnapshot(): Promise<string[]> {
  const rows = await queryRows(
    env,
    sql`SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name`,
    z.object({ name: z.string(), engine: z.string() }),
  );
  return rows.map((r) => `${r.name}:${r.engine}`);
}

describe("values bound into ClickHouse SQL", () => {
  it("come back from the real server exactly as sent", async () => {
    for (const value of HOSTILE) {
      const [row] = await queryRows(
        env,
        sql`SELECT ${value} AS v, length(${value}) AS n`,
        z.object({ v: z.string(), n: num }),
      );
      expect(row?.v).toBe(value);
      expect(row?.n).toBe(new TextEncoder().encode(value).length);
    }
    const [list] = await queryRows(
      env,
      sql`SELECT arrayStringConcat([${HOSTILE[0]}, ${HOSTILE[5]}], '|') AS v`,
      z.object({ v: z.string() }),
    );
    expect(list?.v).toBe(`${HOSTILE[0]}|${HOSTILE[5]}`);
  });

  it("match nothing as filters, with no error and no other table touched", async () => {
    // ClickHouse is shared by every test file: a run-unique tail keeps other files' stored values out of it.
    const marker = crypto.randomUUID();
    const values = HOSTILE.map((value) => `${value}${marker}`);
    const before = await tablesSnapshot();
    const [count] = await queryRows(
      env,
      sql`SELECT count() AS n FROM events WHERE id IN ${values} OR capsule IN ${values}`,
      z.object({ n: num }),
    );
    expect(count?.n).toBe(0);
    for (const value of values) {
      const [row] = await queryRows(
        env,
        sql`SELECT count() AS n FROM usage_hourly WHERE account_id = ${value} OR model = ${value}`,
        z.object({ n: num }),
      );
      expect(row?.n).toBe(0);
    }
    expect(await tablesSnapshot()).toEqual(before);
  });
});

describe("hostile strings through the API", () => {
  let user: Awaited<ReturnType<typeof signup>>;
  const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
  const time = `${day}T06:00:00Z`;
  const usage = (id: string, extra: Record<string, unknown>) => ({
    specversion: "1.0",
    id,
    source: "soma://integration",
    type: "soma.usage.tokens",
    time,
    data: { inputTokens: 1, outputTokens: 1, ...extra },
  });
  const events = () =>
    HOSTILE.map((value, i) => usage(`${value}#${i}`, { model: `${value}#${i}`, projectId: `${value}#${i}` }));
  let before: string[] = [];

  beforeAll(async () => {
    before = await tablesSnapshot();
    user = await signup();
    const res = await api("/v1/events", { method: "POST", token: user.apiKey, json: events() });
    expect(res.status, await res.clone().text()).toBe(202);
    expect(await res.json()).toEqual({ accepted: HOSTILE.length, duplicates: 0 });
  });

  const usageOf = async (query: string) => {
    const res = await api(`/v1/usage?from=${day}&to=${day}&${query}`, { token: user.apiKey });
    expect(res.status, await res.clone().text()).toBe(200);
    return ((await res.json()) as { items: { key: string; events: number }[] }).items;
  };

  it("stores and groups usage by model and project with every value intact", async () => {
    const expected = HOSTILE.map((value, i) => `${value}#${i}`).sort();
    const deadline = Date.now() + 15_000;
    let byModel = await usageOf("groupBy=model");
    while (byModel.length < HOSTILE.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      byModel = await usageOf("groupBy=model");
    }
    expect(byModel.map((i) => i.key).sort()).toEqual(expected);
    expect(byModel.every((i) => i.events === 1)).toBe(true);
    expect((await usageOf("groupBy=project")).map((i) => i.key).sort()).toEqual(expected);
  });

  it("finds each stored id again by exact match, and near misses match nothing", async () => {
    // Ingestion looks the scoped ids up in ClickHouse (`WHERE id IN (...)`): a resend is all duplicates.
    const again = await api("/v1/events", { method: "POST", token: user.apiKey, json: events() });
    expect(await again.json()).toEqual({ accepted: 0, duplicates: HOSTILE.length });
    const nearMisses = HOSTILE.map((value, i) => usage(`${value}#${i}x`, {}));
    const res = await api("/v1/events", { method: "POST", token: user.apiKey, json: nearMisses });
    expect(await res.json()).toEqual({ accepted: HOSTILE.length, duplicates: 0 });
  });

  it("answers a hostile account name with 404 and leaves every table as it was", async () => {
    const admin = await signup();
    await grantRoles(admin.handle, ["admin"]);
    for (const value of HOSTILE) {
      const res = await api(`/v1/usage?from=${day}&to=${day}&account=${encodeURIComponent(value)}`, {
        token: admin.apiKey,
      });
      expect([400, 404]).toContain(res.status);
    }
    expect(await tablesSnapshot()).toEqual(before);
  });
});
