import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { insertRows, queryRows } from "../../workers/shared/analytics/clickhouse";
import { archiveKey, restoreKey } from "../../workers/shared/analytics/retention";
import { sql } from "../../workers/shared/analytics/sql";
import { api, errorOf, signup } from "../helpers";

// Retention drops whole days for every account, and ClickHouse is shared by all test files: only this file
// writes events on these days, and every run names them explicitly so no other file's days are touched.
const OLD_DAYS = ["2025-03-03", "2025-03-04", "2025-03-05"] as const;
const [DAY_1, DAY_2, DAY_3] = OLD_DAYS;
const NEVER_ARCHIVED = "2025-03-09";

type Account = Awaited<ReturnType<typeof signup>>;
let seq = 0;

function event(time: string, data: Record<string, unknown>, type = "soma.usage.tokens") {
  seq += 1;
  return { specversion: "1.0", id: `r${seq}`, source: "soma://retention-test", type, time, data };
}

const usage = (time: string, inputTokens: number, outputTokens: number, amountMicroUsd = 0) =>
  event(time, { inputTokens, outputTokens, amountMicroUsd, model: "m1" });

async function ingest(user: Account, events: unknown[]): Promise<void> {
  const res = await api("/v1/events", { method: "POST", token: user.apiKey, json: events });
  expect(res.status, await res.clone().text()).toBe(202);
}

const admin = (path: string, json?: unknown) =>
  api(`/v1/admin/analytics${path}`, {
    method: json === undefined ? "GET" : "POST",
    token: env.SOMA_ADMIN_TOKEN,
    ...(json === undefined ? {} : { json }),
  });

const num = z.coerce.number();

async function rawIds(day: string, accountId?: string): Promise<string[]> {
  const account = accountId === undefined ? sql`` : sql`AND account_id = ${accountId}`;
  const rows = await queryRows(
    env,
    sql`SELECT id FROM events FINAL WHERE toDate(time) = toDate(${day}) ${account} ORDER BY id`,
    z.object({ id: z.string() }),
  );
  return rows.map((r) => r.id);
}

async function rollup(day: string, accountId: string) {
  const [row] = await queryRows(
    env,
    sql`SELECT sum(events) AS n_events, sum(input_tokens) AS n_in, sum(output_tokens) AS n_out, sum(amount_micro_usd) AS n_amount
        FROM usage_hourly WHERE toDate(hour) = toDate(${day}) AND account_id = ${accountId}`,
    z.object({ n_events: num, n_in: num, n_out: num, n_amount: num }),
  );
  return row;
}

/** Polls until `ready` holds: events reach ClickHouse through the queue, a moment after they are accepted. */
async function eventually<T>(read: () => Promise<T>, ready: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 15_000;
  let value = await read();
  while (!ready(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    value = await read();
  }
  return value;
}

type ArchivedLine = { id: string } & Record<string, unknown>;

async function archivedLines(day: string): Promise<{ rows: string | undefined; lines: ArchivedLine[] }> {
  const object = await env.BUNDLES.get(archiveKey(day));
  if (!object) throw new Error(`no archive of ${day}`);
  const text = await new Response(object.body.pipeThrough(new DecompressionStream("gzip"))).text();
  const lines = text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as ArchivedLine);
  return { rows: object.customMetadata?.rows, lines };
}

describe("raw event retention", () => {
  let user: Account;
  let recentDay: string;
  const expected = new Map<string, string[]>();
  const rollupsBefore = new Map<string, Awaited<ReturnType<typeof rollup>>>();

  beforeAll(async () => {
    user = await signup();
    const recent = new Date(Date.now() - 60_000).toISOString();
    recentDay = recent.slice(0, 10);
    const events = [
      usage(`${DAY_1}T01:10:00Z`, 100, 10, 5),
      usage(`${DAY_1}T01:50:00Z`, 200, 20, 7),
      event(`${DAY_1}T13:00:00Z`, { note: `it's "quoted" \\ ünïcode\nnext line` }, "acme.custom.note"),
      usage(`${DAY_2}T00:00:00Z`, 1, 2),
      usage(`${DAY_2}T23:59:59Z`, 3, 4),
      usage(`${DAY_3}T05:00:00Z`, 10, 1),
      usage(`${DAY_3}T06:00:00Z`, 20, 2),
      usage(`${DAY_3}T07:00:00Z`, 30, 3),
      usage(`${DAY_3}T08:00:00Z`, 40, 4, 1_000_000),
      usage(recent, 5, 5),
    ];
    await ingest(user, events);
    for (const e of events) {
      const day = e.time.slice(0, 10);
      expected.set(day, [...(expected.get(day) ?? []), `acct:${user.id}:${e.id}`].sort());
    }
    for (const day of [...OLD_DAYS, recentDay]) {
      const ids = await eventually(
        () => rawIds(day, user.id),
        (ids) => ids.length === expected.get(day)?.length,
      );
      expect(ids).toEqual(expected.get(day));
    }
    // The materialized view's rows land a moment after the raw rows of the same insert.
    for (const day of OLD_DAYS)
      rollupsBefore.set(
        day,
        await eventually(
          () => rollup(day, user.id),
          (r) => r?.n_events === expected.get(day)?.length,
        ),
      );
  });

  it("archives days older than the retention period to R2 and drops only their raw rows", async () => {
    const res = await admin("/retention", { retentionDays: 30, days: [...OLD_DAYS, recentDay] });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toMatchObject({
      exported: [
        { day: DAY_1, rows: 3 },
        { day: DAY_2, rows: 2 },
        { day: DAY_3, rows: 4 },
      ],
      dropped: [...OLD_DAYS],
      skipped: [],
    });

    for (const day of OLD_DAYS) {
      const archive = await archivedLines(day);
      expect(archive.rows).toBe(String(expected.get(day)?.length));
      expect(archive.lines.map((l) => l.id).sort()).toEqual(expected.get(day));
      expect(await rawIds(day)).toEqual([]);
      expect(await rollup(day, user.id)).toEqual(rollupsBefore.get(day));
    }
    const [note] = (await archivedLines(DAY_1)).lines.filter((l) => l.id.endsWith(":r3"));
    expect(note).toMatchObject({
      type: "acme.custom.note",
      time: `${DAY_1} 13:00:00`,
      data: expect.stringContaining("ünïcode\\nnext line"),
    });
    expect(await rawIds(recentDay, user.id)).toEqual(expected.get(recentDay));
  });

  it("finds nothing to do when run again, keeping RETENTION_DAYS (30) when no period is given", async () => {
    const res = await admin("/retention", { days: [...OLD_DAYS] });
    const today = new Date(new Date().toISOString().slice(0, 10));
    expect(await res.json()).toEqual({
      cutoff: new Date(today.getTime() - 30 * 86_400_000).toISOString().slice(0, 10),
      exported: [],
      dropped: [],
      skipped: [],
    });
  });

  it("lists the archived days with their row counts", async () => {
    const res = await admin("/archive");
    expect(res.status).toBe(200);
    const { items } = (await res.json()) as { items: { day: string; rows: number; bytes: number }[] };
    expect(items.filter((i) => OLD_DAYS.includes(i.day as (typeof OLD_DAYS)[number]))).toEqual([
      expect.objectContaining({ day: DAY_1, rows: 3, key: archiveKey(DAY_1) }),
      expect.objectContaining({ day: DAY_2, rows: 2 }),
      expect.objectContaining({ day: DAY_3, rows: 4 }),
    ]);
  });

  it("re-imports a day once: its raw rows return and its rollups are rebuilt, not doubled", async () => {
    const res = await admin("/reimport", { day: DAY_3 });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toMatchObject({ day: DAY_3, rows: 4, keptUntil: expect.any(String) });
    expect(await rawIds(DAY_3)).toEqual(expected.get(DAY_3));
    expect(await rollup(DAY_3, user.id)).toEqual(rollupsBefore.get(DAY_3));
    expect(rollupsBefore.get(DAY_3)).toMatchObject({ n_events: 4, n_in: 100, n_amount: 1_000_000 });

    const { items } = (await (await admin("/archive")).json()) as { items: { day: string }[] };
    expect(items.find((i) => i.day === DAY_3)).toMatchObject({ restoredUntil: expect.any(String) });
  });

  it("keeps a re-imported day hot and refuses to re-import a hot day", async () => {
    const run = await admin("/retention", { retentionDays: 30, days: [DAY_3] });
    expect(await run.json()).toMatchObject({
      dropped: [],
      skipped: [{ day: DAY_3, reason: expect.stringContaining("re-imported") }],
    });
    expect(await rawIds(DAY_3)).toEqual(expected.get(DAY_3));

    const again = await admin("/reimport", { day: DAY_3 });
    expect(again.status).toBe(409);
    const error = await errorOf(again);
    expect(error.code).toBe("INVALID_STATE");
    expect(error.message).toContain("hot");
    expect(await rollup(DAY_3, user.id)).toEqual(rollupsBefore.get(DAY_3));
  });

  it("adds late events to a day's archive rather than overwriting it", async () => {
    const late = usage(`${DAY_2}T12:00:00Z`, 1000, 1000);
    await ingest(user, [late]);
    const lateId = `acct:${user.id}:${late.id}`;
    await eventually(
      () => rawIds(DAY_2),
      (ids) => ids.includes(lateId),
    );
    const res = await admin("/retention", { retentionDays: 30, days: [DAY_2] });
    expect(await res.json()).toMatchObject({ exported: [{ day: DAY_2, rows: 3 }], dropped: [DAY_2] });
    expect((await archivedLines(DAY_2)).lines.map((l) => l.id).sort()).toEqual(
      [...(expected.get(DAY_2) ?? []), lateId].sort(),
    );
    expect(await rawIds(DAY_2)).toEqual([]);
    const before = rollupsBefore.get(DAY_2);
    expect(await rollup(DAY_2, user.id)).toEqual({
      n_events: (before?.n_events ?? 0) + 1,
      n_in: (before?.n_in ?? 0) + 1000,
      n_out: (before?.n_out ?? 0) + 1000,
      n_amount: before?.n_amount,
    });
  });

  it("starts over a re-import that failed part-way, dropping its partial rows first", async () => {
    // The state a re-import leaves when it fails after inserting some rows: one archived row back in
    // ClickHouse (and counted again by the rollup), and a marker saying the re-import failed.
    const archived = (await archivedLines(DAY_2)).lines;
    await insertRows(env, "events", archived.slice(0, 1));
    await env.BUNDLES.put(
      restoreKey(DAY_2),
      JSON.stringify({
        day: DAY_2,
        state: "restoring",
        startedAt: new Date().toISOString(),
        failedAt: new Date().toISOString(),
      }),
    );
    const totals = await rollup(DAY_2, user.id);

    const held = await admin("/retention", { retentionDays: 30, days: [DAY_2] });
    expect(await held.json()).toMatchObject({
      dropped: [],
      skipped: [{ day: DAY_2, reason: expect.stringContaining("failed part-way") }],
    });

    const res = await admin("/reimport", { day: DAY_2 });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toMatchObject({ day: DAY_2, rows: archived.length });
    expect(await rawIds(DAY_2)).toEqual(archived.map((l) => l.id).sort());
    expect(await rollup(DAY_2, user.id)).toEqual({
      n_events: (totals?.n_events ?? 0) - 1,
      n_in: (totals?.n_in ?? 0) - Number(archived[0]?.input_tokens),
      n_out: (totals?.n_out ?? 0) - Number(archived[0]?.output_tokens),
      n_amount: (totals?.n_amount ?? 0) - Number(archived[0]?.amount_micro_usd),
    });
  });

  it("answers 404 for a day that was never archived", async () => {
    const res = await admin("/reimport", { day: NEVER_ARCHIVED });
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe("NOT_FOUND");
  });

  it.each([
    ["/reimport", { day: "2025-3-3" }],
    ["/reimport", { day: "03/03/2025" }],
    ["/reimport", { day: "2025-13-01" }],
    ["/reimport", {}],
    ["/reimport", { day: DAY_1, extra: true }],
    ["/retention", { retentionDays: 0 }],
    ["/retention", { days: ["yesterday"] }],
  ])("rejects POST %s with %j as a validation error", async (path, body) => {
    const res = await admin(path, body);
    expect(res.status).toBe(400);
    expect((await errorOf(res)).code).toBe("VALIDATION_FAILED");
  });

  it("keeps retention to admins", async () => {
    const routes: [string, string][] = [
      ["POST", "/retention"],
      ["POST", "/reimport"],
      ["GET", "/archive"],
    ];
    const other = await signup();
    for (const [method, path] of routes) {
      const json = method === "POST" ? { day: DAY_1 } : undefined;
      const url = `/v1/admin/analytics${path}`;
      expect((await api(url, { method, ...(json ? { json } : {}) })).status).toBe(401);
      expect((await api(url, { method, token: other.apiKey, ...(json ? { json } : {}) })).status).toBe(403);
    }
    expect(await rawIds(DAY_1)).toEqual([]);
  });

  it("counts a day once when two re-imports of it race", async () => {
    const results = await Promise.all([
      admin("/reimport", { day: DAY_1 }),
      admin("/reimport", { day: DAY_1 }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual([200, 409]);
    const refused = results.find((r) => r.status === 409);
    // Usually the marker's conditional write refuses it; a slower second call finds the day already hot.
    expect(["CONFLICT", "INVALID_STATE"]).toContain(refused && (await errorOf(refused)).code);
    expect(await rawIds(DAY_1)).toEqual(expected.get(DAY_1));
    expect(await rollup(DAY_1, user.id)).toEqual(rollupsBefore.get(DAY_1));
  });
});
