import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { api, errorOf, grantRoles, publish, signup } from "../helpers";

type Account = Awaited<ReturnType<typeof signup>>;

const day = (offset: number) => {
  const d = new Date();
  // Just after midnight UTC: "today" is never in the future, whatever the hour the tests run.
  d.setUTCHours(0, 5, 0, 0);
  d.setUTCDate(d.getUTCDate() + offset);
  return d.toISOString();
};

function usage(
  id: string,
  time: string,
  inputTokens: number,
  outputTokens: number,
  extra: Record<string, unknown> = {},
) {
  return {
    specversion: "1.0",
    id,
    source: "soma://integration",
    type: "soma.usage.tokens",
    time,
    data: { inputTokens, outputTokens, ...extra },
  };
}

async function ingest(token: string, events: unknown[]): Promise<Response> {
  return api("/v1/events", { method: "POST", token, json: events });
}

/** Polls a query until `ready` holds: events become visible after the queue hands them to ClickHouse. */
async function eventually<T>(
  read: () => Promise<T>,
  ready: (value: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!ready(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    value = await read();
  }
  return value;
}

interface UsageItems {
  items: { key: string; inputTokens: number; outputTokens: number; totalTokens: number; events: number }[];
}

async function usageOf(token: string, query: string): Promise<UsageItems> {
  const res = await api(`/v1/usage?${query}`, { token });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as UsageItems;
}

/**
 * Waits until every token of a backfill is visible. A backfill over several months lands in several
 * partitions, which become visible one after another; a forecast read in between would fit part of it.
 */
async function backfillVisible(token: string, fromDay: string, tokens: number): Promise<void> {
  const today = new Date().toISOString().slice(0, 10);
  const total = await eventually(
    async () =>
      (await usageOf(token, `from=${fromDay}&to=${today}&groupBy=day`)).items.reduce(
        (n, i) => n + i.totalTokens,
        0,
      ),
    (n) => n === tokens,
  );
  expect(total).toBe(tokens);
}

describe("POST /v1/events and GET /v1/usage", () => {
  let user: Account;
  let capsuleA = "";
  let capsuleB = "";
  beforeAll(async () => {
    user = await signup();
    capsuleA = (await publish(user.apiKey, { name: `${user.handle}/a` })).name;
    capsuleB = (await publish(user.apiKey, { name: `${user.handle}/b` })).name;
    const res = await ingest(user.apiKey, [
      usage("u1", day(-2), 100, 50, { capsule: capsuleA, model: "m1", projectId: "p1" }),
      usage("u2", day(-2), 10, 5, { capsule: capsuleB, model: "m2", projectId: "p1" }),
      usage("u3", day(-1), 1000, 500, { capsule: capsuleA, model: "m1", projectId: "p2" }),
      usage("u3", day(-1), 1000, 500, { capsule: capsuleA, model: "m1", projectId: "p2" }),
      {
        specversion: "1.0",
        id: "i1",
        source: "soma://integration",
        type: "acme.custom.thing",
        time: day(-1),
        data: { note: "x" },
      },
    ]);
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 4, duplicates: 1 });
  });

  it("sums real recorded usage by day, capsule, model and project", async () => {
    const range = `from=${day(-3).slice(0, 10)}&to=${day(0).slice(0, 10)}`;
    const byDay = await eventually(
      () => usageOf(user.apiKey, `${range}&groupBy=day`),
      (u) => u.items.reduce((n, i) => n + i.events, 0) === 3,
    );
    expect(byDay.items).toEqual([
      { key: day(-2).slice(0, 10), inputTokens: 110, outputTokens: 55, totalTokens: 165, events: 2 },
      { key: day(-1).slice(0, 10), inputTokens: 1000, outputTokens: 500, totalTokens: 1500, events: 1 },
    ]);
    expect(
      (await usageOf(user.apiKey, `${range}&groupBy=capsule`)).items.map((i) => [i.key, i.totalTokens]),
    ).toEqual([
      [capsuleA, 1650],
      [capsuleB, 15],
    ]);
    expect(
      (await usageOf(user.apiKey, `${range}&groupBy=model`)).items.map((i) => [i.key, i.events]),
    ).toEqual([
      ["m1", 2],
      ["m2", 1],
    ]);
    expect((await usageOf(user.apiKey, `${range}&groupBy=project`)).items.map((i) => i.key)).toEqual([
      "p2",
      "p1",
    ]);
  });

  it("counts a resent event as a duplicate once it is stored", async () => {
    await eventually(
      () => usageOf(user.apiKey, `from=${day(-3).slice(0, 10)}&to=${day(0).slice(0, 10)}`),
      (u) => u.items.length === 2,
    );
    const res = await ingest(user.apiKey, [usage("u1", day(-2), 100, 50)]);
    expect(await res.json()).toEqual({ accepted: 0, duplicates: 1 });
  });

  it("scopes usage to the caller and lets only admins name another account", async () => {
    const other = await signup();
    const range = `from=${day(-3).slice(0, 10)}&to=${day(0).slice(0, 10)}`;
    expect((await usageOf(other.apiKey, range)).items).toEqual([]);
    expect((await api(`/v1/usage?${range}&account=${user.handle}`, { token: other.apiKey })).status).toBe(
      403,
    );
    const admin = await signup();
    await grantRoles(admin.handle, ["admin"]);
    const asAdmin = await usageOf(admin.apiKey, `${range}&account=${user.handle}`);
    expect(asAdmin.items.reduce((n, i) => n + i.totalTokens, 0)).toBe(1665);
  });

  it.each([
    ["not an array", { id: "x" }],
    ["an empty array", []],
    ["a bad type", [{ ...usage("b1", day(0), 1, 1), type: "Bad Type" }]],
    ["usage without token counts", [{ ...usage("b2", day(0), 1, 1), data: { inputTokens: 1 } }]],
    ["negative tokens", [usage("b3", day(0), -1, 1)]],
    ["a future time", [usage("b4", new Date(Date.now() + 86_400_000).toISOString(), 1, 1)]],
    ["more than 1000 events", Array.from({ length: 1001 }, (_, i) => usage(`m${i}`, day(0), 1, 1))],
  ])("rejects %s with 400 and stores nothing", async (_label, body) => {
    const res = await ingest(user.apiKey, body as unknown[]);
    expect(res.status).toBe(400);
    expect((await errorOf(res)).code).toBe("VALIDATION_FAILED");
  });

  it("requires an account to ingest and a valid range to query", async () => {
    expect((await api("/v1/events", { method: "POST", json: [usage("a", day(0), 1, 1)] })).status).toBe(401);
    expect(
      (
        await api("/v1/events", {
          method: "POST",
          token: env.SOMA_ADMIN_TOKEN,
          json: [usage("a", day(0), 1, 1)],
        })
      ).status,
    ).toBe(403);
    expect((await api("/v1/usage?from=2026-01-01", { token: user.apiKey })).status).toBe(400);
    expect((await api("/v1/usage?from=2026-02-01&to=2026-01-01", { token: user.apiKey })).status).toBe(400);
    expect(
      (await api("/v1/usage?from=2026-01-01&to=2026-02-01&groupBy=color", { token: user.apiKey })).status,
    ).toBe(400);
  });

  it("binds hostile filter values safely", async () => {
    const admin = await signup();
    await grantRoles(admin.handle, ["admin"]);
    const hostile = encodeURIComponent("x' OR 1=1 --");
    const res = await api(`/v1/usage?from=2026-01-01&to=2026-02-01&account=${hostile}`, {
      token: admin.apiKey,
    });
    expect(res.status).toBe(404);
    const events = await ingest(user.apiKey, [
      usage("'; DROP TABLE events; --", day(0), 1, 1, { model: "x' OR '1'='1" }),
    ]);
    expect(events.status).toBe(202);
  });
});

describe("ingestion freshness", () => {
  it("shows an accepted event through GET /v1/usage within 10 s", async () => {
    const user = await signup();
    const today = new Date().toISOString().slice(0, 10);
    const res = await ingest(user.apiKey, [usage("fresh", new Date().toISOString(), 321, 123)]);
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 1, duplicates: 0 });
    const acceptedAt = Date.now();
    // Polled every 200 ms; the only limit is the 10 s the freshness goal allows.
    const seen = await eventually(
      () => usageOf(user.apiKey, `from=${today}&to=${today}`),
      (u) => u.items.length > 0,
      10_000 - (Date.now() - acceptedAt),
    );
    expect(seen.items).toEqual([
      { key: today, inputTokens: 321, outputTokens: 123, totalTokens: 444, events: 1 },
    ]);
  });
});

describe("POST /v1/events keeps the platform's own record to the platform", () => {
  const event = (id: string, type: string, data: Record<string, unknown>, time = day(-1)) => ({
    specversion: "1.0",
    id,
    source: "soma://integration",
    type,
    time,
    data,
  });
  const lastMonth = () => {
    const d = new Date();
    d.setUTCDate(1);
    d.setUTCMonth(d.getUTCMonth() - 1);
    d.setUTCHours(12, 0, 0, 0);
    return d.toISOString();
  };

  it.each([
    [
      "a charge (a negative one, backfilled into last month)",
      "soma.charge.recorded",
      { amountMicroUsd: -5_000_000 },
    ],
    ["an earning", "soma.earning.recorded", { amountMicroUsd: 1_000_000 }],
    ["an install", "soma.install.created", { capsule: "someone/else" }],
    ["a rating", "soma.rating.created", { capsule: "someone/else", stars: 5 }],
    ["a security event", "soma.security.auth_failed", {}],
    ["a budget alert", "soma.budget.threshold", { level: "hard" }],
  ])("refuses %s with 400 naming the event index and field", async (_label, type, data) => {
    const user = await signup();
    const res = await ingest(user.apiKey, [
      usage("ok", day(-1), 1, 1),
      event("forged", type, data, type === "soma.charge.recorded" ? lastMonth() : day(-1)),
    ]);
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.code).toBe("VALIDATION_FAILED");
    expect(error.message).toContain("index 1: type");
    expect(error.message).toContain("soma.usage.tokens");
    expect((error.details as { issues: { path: string }[] }).issues[0]?.path).toBe("1.type");
  });

  it("refuses negative or fractional amounts, and usage of a capsule the account neither owns nor installed", async () => {
    const user = await signup();
    const author = await signup();
    const theirs = (await publish(author.apiKey, { name: `${author.handle}/popular` })).name;
    const negative = await ingest(user.apiKey, [event("n1", "acme.refund.issued", { amountMicroUsd: -1 })]);
    expect(negative.status).toBe(400);
    expect((await errorOf(negative)).details).toMatchObject({ issues: [{ path: "0.data.amountMicroUsd" }] });
    const fractional = await ingest(user.apiKey, [usage("n2", day(-1), 1, 1, { amountMicroUsd: 0.5 })]);
    expect((await errorOf(fractional)).details).toMatchObject({
      issues: [{ path: "0.data.amountMicroUsd" }],
    });
    const inflated = await ingest(user.apiKey, [
      usage("n3", day(-1), 1, 1),
      usage("n4", day(-1), 1, 1, { capsule: theirs }),
    ]);
    expect(inflated.status).toBe(400);
    const error = await errorOf(inflated);
    expect(error.message).toContain("index 1: data.capsule");
    expect(error.details).toMatchObject({ issues: [{ path: "1.data.capsule" }] });
    // Its author may record usage of it, and types outside soma.* with non-negative amounts are the integration's own.
    expect(
      (
        await ingest(author.apiKey, [
          usage("own", day(-1), 1, 1, { capsule: theirs }),
          event("custom", "acme.deploy.finished", { amountMicroUsd: 0 }),
        ])
      ).status,
    ).toBe(202);
  });

  it("accepts nothing of a request with one bad event, and leaves invoices alone", async () => {
    const user = await signup();
    const refused = await ingest(user.apiKey, [
      usage("g1", day(-1), 7, 0),
      event("bad", "soma.charge.recorded", { amountMicroUsd: -1_000_000 }),
    ]);
    expect(refused.status).toBe(400);
    // A later event from the same account reaches ClickHouse after anything the refused request could have queued.
    expect((await ingest(user.apiKey, [usage("g2", day(-1), 11, 0)])).status).toBe(202);
    const range = `from=${day(-3).slice(0, 10)}&to=${day(0).slice(0, 10)}`;
    const seen = await eventually(
      () => usageOf(user.apiKey, range),
      (u) => u.items.length > 0,
    );
    expect(seen.items.map((i) => [i.totalTokens, i.events])).toEqual([[11, 1]]);
    const invoice = (await (
      await api(`/v1/invoices/${lastMonth().slice(0, 7)}`, { token: user.apiKey })
    ).json()) as {
      invoice: { subtotalMicroUsd: number; lines: unknown[] };
    };
    expect(invoice.invoice).toMatchObject({ subtotalMicroUsd: 0, lines: [] });
  });
});

describe("GET /v1/analytics/*", () => {
  let author: Account;
  let capsule = "";
  beforeAll(async () => {
    author = await signup();
    capsule = (await publish(author.apiKey, { name: `${author.handle}/measured` })).name;
    await ingest(author.apiKey, [
      usage("x1", day(-1), 40, 10, { capsule, outcome: "success" }),
      usage("x2", day(-1), 40, 10, { capsule, outcome: "failure" }),
      usage("x3", day(0), 100, 0, { capsule, outcome: "success" }),
    ]);
    // Ratings are the platform's own events (integrations may not send them): straight onto the events queue.
    await env.EVENTS.sendBatch(
      [4, 2].map((stars) => ({
        body: {
          specversion: "1.0",
          id: `rating:${capsule}:${stars}`,
          source: "soma://api",
          type: "soma.rating.created",
          time: day(-1),
          data: { accountId: author.id, capsule, stars },
        },
        contentType: "json" as const,
      })),
    );
  });

  it("gives the author executions, success rate, average tokens and ratings over time", async () => {
    const read = async () => {
      const res = await api(`/v1/analytics/capsules/${capsule}?from=${day(-5)}&interval=day`, {
        token: author.apiKey,
      });
      expect(res.status).toBe(200);
      return (await res.json()) as {
        totals: { executions: number; successRate: number; averageTokens: number };
        ratings: { average: number; count: number }[];
      };
    };
    const body = await eventually(read, (b) => b.totals.executions === 3 && b.ratings.length === 1);
    expect(body.totals).toMatchObject({ executions: 3, successRate: 2 / 3, averageTokens: 67 });
    expect(body.ratings).toEqual([expect.objectContaining({ average: 3, count: 2 })]);
    const stranger = await signup();
    expect((await api(`/v1/analytics/capsules/${capsule}`, { token: stranger.apiKey })).status).toBe(404);
  });

  it("exports the author's table as CSV", async () => {
    const res = await api(`/v1/analytics/capsules/${capsule}?from=${day(-5)}&interval=day&format=csv`, {
      token: author.apiKey,
    });
    expect(res.headers.get("content-type")).toContain("text/csv");
    const text = await res.text();
    expect(text.split("\r\n")[0]).toBe("t,executions,successRate,averageTokens");
  });

  it("shows my usage and the platform overview, and the admin view to admins only", async () => {
    const me = await eventually(
      async () =>
        (await (await api(`/v1/analytics/me?from=${day(-5)}`, { token: author.apiKey })).json()) as {
          totals: { tokens: number };
        },
      (b) => b.totals.tokens === 200,
    );
    expect(me.totals.tokens).toBe(200);
    const platform = await api(`/v1/analytics/platform?from=${day(-5)}&interval=day`, {
      token: author.apiKey,
    });
    expect(platform.status).toBe(200);
    const overview = (await platform.json()) as {
      totals: { executions: number; capsules: number; accounts: number };
    };
    expect(overview.totals.executions).toBeGreaterThanOrEqual(3);
    expect(overview.totals.capsules).toBeGreaterThanOrEqual(1);
    expect((await api("/v1/analytics/admin", { token: author.apiKey })).status).toBe(403);
    const admin = await api(`/v1/analytics/admin?from=${day(-5)}`, { token: env.SOMA_ADMIN_TOKEN });
    expect(admin.status).toBe(200);
    const tenants = ((await admin.json()) as { tenants: { accountId: string; totalTokens: number }[] })
      .tenants;
    expect(tenants.find((t) => t.accountId === author.id)?.totalTokens).toBe(200);
    expect((await api("/v1/analytics/platform?interval=minute", { token: author.apiKey })).status).toBe(400);
    expect((await api("/v1/analytics/platform")).status).toBe(401);
  });
});

describe("GET /v1/forecast", () => {
  it("forecasts 30 days from a backfilled weekly series with intervals and a budget", async () => {
    const user = await signup();
    // 56 days: 10k tokens on weekdays, 2k at weekends, exactly.
    const events = Array.from({ length: 56 }, (_, i) => {
      const d = new Date();
      d.setUTCHours(1, 0, 0, 0);
      d.setUTCDate(d.getUTCDate() - 56 + i);
      const weekend = d.getUTCDay() === 0 || d.getUTCDay() === 6;
      return usage(`f${i}`, d.toISOString(), weekend ? 1500 : 8000, weekend ? 500 : 2000);
    });
    expect((await ingest(user.apiKey, events)).status).toBe(202);
    const weekendDays = events.filter((e) => e.data.inputTokens === 1500).length;
    await backfillVisible(
      user.apiKey,
      events[0]!.time.slice(0, 10),
      2000 * weekendDays + 10_000 * (56 - weekendDays),
    );
    const read = async () =>
      (await (await api("/v1/forecast?horizonDays=30", { token: user.apiKey })).json()) as {
        daily: { day: string; tokens: number; low: number; high: number }[];
        totalTokens: number;
        recommendedBudgetTokens: number;
        method: string;
        historyDays: number;
      };
    const forecast = await eventually(read, (f) => f.method === "holt-winters-additive");
    expect(forecast.daily).toHaveLength(30);
    expect(forecast.daily[0]?.day).toBe(new Date().toISOString().slice(0, 10));
    for (const point of forecast.daily) {
      const weekend = [0, 6].includes(new Date(`${point.day}T00:00:00Z`).getUTCDay());
      expect(Math.abs(point.tokens - (weekend ? 2000 : 10_000))).toBeLessThan(1000);
      expect(point.low).toBeLessThanOrEqual(point.tokens);
      expect(point.high).toBeGreaterThanOrEqual(point.tokens);
    }
    expect(forecast.recommendedBudgetTokens).toBeGreaterThanOrEqual(forecast.totalTokens);
  });

  it("forecasts spend from the account's recorded charges", async () => {
    const user = await signup();
    // Charges are the platform's own events: 21 days of 1,000 tokens and 2,000 micro-USD of charges a day.
    const events = Array.from({ length: 21 }, (_, i) => {
      const d = new Date();
      d.setUTCHours(2, 0, 0, 0);
      d.setUTCDate(d.getUTCDate() - 21 + i);
      const common = { specversion: "1.0", source: "soma://api", time: d.toISOString() };
      return [
        {
          ...common,
          id: `fu:${user.id}:${i}`,
          type: "soma.usage.tokens",
          data: { accountId: user.id, inputTokens: 600, outputTokens: 400 },
        },
        {
          ...common,
          id: `fc:${user.id}:${i}`,
          type: "soma.charge.recorded",
          data: { accountId: user.id, capsule: "acme/paid", amountMicroUsd: 2_000 },
        },
      ];
    }).flat();
    await env.EVENTS.sendBatch(events.map((body) => ({ body, contentType: "json" as const })));
    await backfillVisible(user.apiKey, events[0]!.time.slice(0, 10), 21_000);
    const read = async () =>
      (await (await api("/v1/forecast?horizonDays=30", { token: user.apiKey })).json()) as {
        daily: { spendMicroUsd: number }[];
        totalTokens: number;
        totalSpendMicroUsd: number;
        spendMethod: string;
        historyDays: number;
      };
    const forecast = await eventually(read, (f) => f.historyDays >= 21 && f.totalSpendMicroUsd > 0);
    expect(forecast.spendMethod).toBe("model");
    expect(Math.abs(forecast.totalTokens - 30_000)).toBeLessThan(1_000);
    expect(Math.abs(forecast.totalSpendMicroUsd - 60_000)).toBeLessThan(2_000);
  });

  it("validates the scope and keeps other accounts to admins", async () => {
    const user = await signup();
    expect((await api("/v1/forecast?scope=everything", { token: user.apiKey })).status).toBe(400);
    expect((await api("/v1/forecast?scope=account:someone", { token: user.apiKey })).status).toBe(403);
    expect((await api(`/v1/forecast?scope=project:${"a".repeat(64)}`, { token: user.apiKey })).status).toBe(
      404,
    );
    expect((await api("/v1/forecast?horizonDays=0", { token: user.apiKey })).status).toBe(400);
    const empty = (await (await api("/v1/forecast", { token: user.apiKey })).json()) as {
      method: string;
      totalTokens: number;
    };
    expect(empty).toMatchObject({ method: "none", totalTokens: 0 });
  });
});
