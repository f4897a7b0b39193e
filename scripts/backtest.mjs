#!/usr/bin/env node
// Reports how accurate the usage forecast is on recorded series: `npm run backtest -- [--holdout 30]
// [--min-days 60] [--demo] [--json] [--check]`. Reads daily token totals per account from ClickHouse
// (CLICKHOUSE_URL, CLICKHOUSE_DATABASE, CLICKHOUSE_USER, CLICKHOUSE_PASSWORD), holds out the last days of each
// account with enough history and of the platform total, and prints the MAPE beside the goal.
// --demo backtests a synthetic series instead when ClickHouse has none; --check exits 1 when the goal is missed.
import { parseArgs } from "node:util";

const GOAL_MAPE = 0.2;
const DAY_MS = 86_400_000;

const { values } = parseArgs({
  options: {
    holdout: { type: "string", default: "30" },
    "min-days": { type: "string", default: "60" },
    demo: { type: "boolean", default: false },
    seed: { type: "string", default: "20250601" },
    json: { type: "boolean", default: false },
    check: { type: "boolean", default: false },
  },
});
const holdoutDays = Number(values.holdout);
const minDays = Number(values["min-days"]);
if (
  !Number.isInteger(holdoutDays) ||
  holdoutDays < 1 ||
  !Number.isInteger(minDays) ||
  minDays <= holdoutDays
) {
  console.error("--holdout must be a positive integer and --min-days larger than it");
  process.exit(2);
}

// The forecast module is TypeScript loaded through Node's type stripping (22.18+); `npm run` uses the
// project's Node, a bare `node` may be older.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(
    `Node ${process.versions.node} cannot load TypeScript; run \`npm run backtest\` (Node 22.18+).`,
  );
  process.exit(2);
}
const { backtest } = await import("../workers/shared/analytics/forecast.ts");

const clickhouseUrl = (process.env.CLICKHOUSE_URL ?? "http://127.0.0.1:8123").replace(/\/$/, "");
const database = process.env.CLICKHOUSE_DATABASE ?? "soma";
const today = new Date().toISOString().slice(0, 10);
const yesterday = new Date(Date.parse(`${today}T00:00:00Z`) - DAY_MS).toISOString().slice(0, 10);

/** Daily totals per account, UTC days, up to yesterday: today's partial total would read as a drop. */
async function recordedSeries() {
  const query = `SELECT toString(toDate(hour, 'UTC')) AS day, account_id,
    sum(input_tokens + output_tokens) AS tokens, sum(amount_micro_usd) AS spend
  FROM usage_hourly
  WHERE hour < toDateTime('${today} 00:00:00', 'UTC')
  GROUP BY day, account_id
  ORDER BY account_id, day
  FORMAT JSONEachRow`;
  const user = process.env.CLICKHOUSE_USER ?? "default";
  const password = process.env.CLICKHOUSE_PASSWORD ?? "";
  const response = await fetch(`${clickhouseUrl}/?database=${encodeURIComponent(database)}`, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` },
    body: query,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`ClickHouse ${response.status}: ${text.split("\n")[0]?.slice(0, 300)}`);
  const byAccount = new Map();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const row = JSON.parse(line);
    // 64-bit integers arrive as JSON strings.
    const tokens = Number(row.tokens);
    const spend = Number(row.spend);
    if (typeof row.day !== "string" || typeof row.account_id !== "string" || !Number.isFinite(tokens)) {
      throw new Error(`Unexpected row from ClickHouse: ${line.slice(0, 200)}`);
    }
    const entries = byAccount.get(row.account_id) ?? [];
    entries.push({ day: row.day, tokens, spendMicroUsd: Number.isFinite(spend) ? spend : undefined });
    byAccount.set(row.account_id, entries);
  }
  return [...byAccount].map(([name, history]) => ({ name, history }));
}

/** mulberry32, so the demo series and its score are the same on every run with the same --seed. */
function mulberry32(seed) {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** 180 days to a fixed date (for reproducible scores): weekday/weekend pattern, trend and multiplicative noise. */
function syntheticSeries(seed) {
  const random = mulberry32(seed);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const shapes = [
    { name: "synthetic-growing", base: 40_000, slope: 150, weekend: 0.45, noise: 0.1 },
    { name: "synthetic-steady", base: 250_000, slope: 0, weekend: 0.6, noise: 0.08 },
    { name: "synthetic-noisy", base: 8_000, slope: 20, weekend: 0.3, noise: 0.2 },
  ];
  const days = 180;
  const first = Date.parse("2025-06-30T00:00:00Z") - (days - 1) * DAY_MS;
  return shapes.map((shape) => ({
    name: shape.name,
    history: Array.from({ length: days }, (_, i) => {
      const date = new Date(first + i * DAY_MS);
      const weekend = date.getUTCDay() === 0 || date.getUTCDay() === 6;
      const level = (shape.base + shape.slope * i) * (weekend ? shape.weekend : 1);
      const tokens = Math.max(0, Math.round(level * (1 + shape.noise * gaussian())));
      // About $3 per million tokens.
      return { day: date.toISOString().slice(0, 10), tokens, spendMicroUsd: tokens * 3 };
    }),
  }));
}

function spanDays(history) {
  const days = history.map((e) => Date.parse(`${e.day}T00:00:00Z`));
  return Math.round((Math.max(...days) - Math.min(...days)) / DAY_MS) + 1;
}

/** Sums every account per day: the platform total, which is smoother than any one account. */
function totalSeries(series) {
  const byDay = new Map();
  for (const { history } of series) {
    for (const e of history) byDay.set(e.day, (byDay.get(e.day) ?? 0) + e.tokens);
  }
  return [...byDay].sort(([a], [b]) => (a < b ? -1 : 1)).map(([day, tokens]) => ({ day, tokens }));
}

let source;
let series = [];
let clickhouseProblem;
try {
  series = await recordedSeries();
  source = `ClickHouse ${clickhouseUrl} database ${database} (recorded usage)`;
} catch (error) {
  clickhouseProblem = error instanceof Error ? error.message : String(error);
}
// Idle days have no rows: pin every series to yesterday so a quiet end counts as zero usage, not as unknown.
for (const s of series) s.history.push({ day: yesterday, tokens: 0 });
let eligible = series.filter((s) => spanDays(s.history) >= minDays);

if (eligible.length === 0) {
  const why = clickhouseProblem
    ? `Reading ClickHouse failed (${clickhouseProblem})`
    : `ClickHouse has no account with ${minDays}+ days of usage`;
  if (!values.demo) {
    console.error(`${why}. Run with --demo to backtest a synthetic series instead.`);
    process.exit(1);
  }
  series = syntheticSeries(Number(values.seed));
  eligible = series;
  source = `SYNTHETIC demo series, seed ${values.seed} (${why}); not recorded usage`;
}

const rows = [];
for (const s of eligible) {
  const started = performance.now();
  const result = backtest(s.history, { holdoutDays });
  rows.push({ series: s.name, days: spanDays(s.history), ...result, ms: performance.now() - started });
}
// The platform total is only meaningful beside several accounts; with one it repeats that account.
const total = totalSeries(series);
const totalRow =
  series.length > 1 && spanDays(total) >= minDays
    ? { series: "all accounts (sum)", days: spanDays(total), ...backtest(total, { holdoutDays }) }
    : undefined;

// Pooled over every held-out account-day with usage, i.e. per-account MAPEs weighted by their points.
const scored = rows.filter((r) => r.mape !== null);
const points = scored.reduce((sum, r) => sum + r.points, 0);
const aggregate = points > 0 ? scored.reduce((sum, r) => sum + r.mape * r.points, 0) / points : null;
const withinGoal = aggregate !== null && aggregate <= GOAL_MAPE;

if (values.json) {
  console.log(
    JSON.stringify({
      source,
      holdoutDays,
      goalMape: GOAL_MAPE,
      series: rows,
      total: totalRow,
      aggregate,
      withinGoal,
    }),
  );
} else {
  const percent = (v) => (v === null ? "n/a" : `${(v * 100).toFixed(1)}%`);
  const line = (r) =>
    [
      r.series.padEnd(24),
      String(r.days).padStart(5),
      String(r.points).padStart(7),
      percent(r.mape).padStart(7),
      Math.round(r.mae).toLocaleString("en-US").padStart(12),
      `  ${r.method}`,
    ].join(" ");
  console.log(`Forecast backtest: last ${holdoutDays} days held out, goal MAPE <= ${percent(GOAL_MAPE)}`);
  console.log(`Source: ${source}`);
  console.log("");
  console.log(`${"series".padEnd(24)}  days  points    MAPE   MAE tokens  method`);
  for (const r of rows) console.log(line(r));
  if (totalRow) console.log(line(totalRow));
  console.log("");
  console.log(
    `Aggregate MAPE over ${scored.length} series (${points} account-days): ${percent(aggregate)}` +
      `  goal ${percent(GOAL_MAPE)}  ${aggregate === null ? "no data" : withinGoal ? "within goal" : "MISSES goal"}`,
  );
  const slowest = Math.max(...rows.map((r) => r.ms));
  console.log(`Slowest backtest fit: ${slowest.toFixed(1)} ms`);
}
if (values.check && !withinGoal) process.exit(1);
