import { z } from "zod";
import { CHARGE_EVENT, EARNING_EVENT, REVENUE_EVENT } from "../economics/money-events";
import { AppError } from "../errors";
import { type ClickHouseEnv, queryRows } from "./clickhouse";
import { type Sql, sql } from "./sql";

/** Token usage, recorded by the platform or sent by integrations. */
export const USAGE_EVENT = "soma.usage.tokens";

export const INTERVALS = ["hour", "day", "week", "month"] as const;
export type Interval = (typeof INTERVALS)[number];

const isoDate = z
  .string()
  .max(40)
  .refine((v) => !Number.isNaN(Date.parse(v)), "must be an ISO date or date-time");

/** `from`, `to` (ISO dates or date-times, `to` exclusive; default the last 30 days) and `interval`. */
export const rangeQuerySchema = z.object({
  from: isoDate.optional(),
  to: isoDate.optional(),
  interval: z.enum(INTERVALS).default("day"),
  format: z.enum(["json", "csv"]).default("json"),
});

export interface Range {
  from: Date;
  to: Date;
  interval: Interval;
}

const MAX_RANGE_DAYS = 731;

/** Resolves and checks a range: from < to, at most two years, at most 5,000 buckets. */
export function resolveRange(query: {
  from?: string | undefined;
  to?: string | undefined;
  interval: Interval;
}): Range {
  const to = query.to ? new Date(query.to) : new Date(Date.now() + 3_600_000);
  const from = query.from ? new Date(query.from) : new Date(to.getTime() - 30 * 86_400_000);
  if (from >= to)
    throw new AppError("VALIDATION_FAILED", "from must be before to", {
      issues: [{ path: "from", message: "must be before to" }],
    });
  const days = (to.getTime() - from.getTime()) / 86_400_000;
  if (days > MAX_RANGE_DAYS) {
    throw new AppError("VALIDATION_FAILED", `The range is longer than ${MAX_RANGE_DAYS} days`, {
      issues: [{ path: "from", message: "range too long" }],
    });
  }
  if (query.interval === "hour" && days > 200) {
    throw new AppError("VALIDATION_FAILED", "Hourly series are limited to 200 days", {
      issues: [{ path: "interval", message: "too many buckets" }],
    });
  }
  return { from, to, interval: query.interval };
}

function bucket(interval: Interval, column: Sql): Sql {
  switch (interval) {
    case "hour":
      return column;
    case "day":
      return sql`toStartOfDay(${column})`;
    case "week":
      return sql`toDateTime(toMonday(${column}))`;
    case "month":
      return sql`toDateTime(toStartOfMonth(${column}))`;
  }
}

const HOUR = sql`hour`;
const num = z.coerce.number();
// Aliases differ from column names: reusing a column name as an alias makes ClickHouse nest the aggregates.
const bucketRow = z.object({
  bucket: z.string(),
  n_events: num,
  n_failures: num,
  n_in: num,
  n_out: num,
  n_amount: num,
  n_spend: num,
  n_earnings: num,
  n_revenue: num,
});

/**
 * Money by meaning, never a sum over every amount: spend is what the account paid (its charges), earnings
 * what it was credited as an author, revenue the platform's share of its charges (see `money-events.ts`).
 */
const MONEY = sql`sumIf(amount_micro_usd, type = ${CHARGE_EVENT}) AS n_spend,
  sumIf(amount_micro_usd, type = ${EARNING_EVENT}) AS n_earnings,
  sumIf(amount_micro_usd, type = ${REVENUE_EVENT}) AS n_revenue`;

/** Filters on the hourly rollup, every value bound through `sql`. */
export interface UsageFilter {
  accountId?: string;
  capsule?: string;
  projectId?: string;
  types?: string[];
}

function where(range: Range, filter: UsageFilter): Sql {
  let clause = sql`hour >= ${new Date(Math.floor(range.from.getTime() / 3_600_000) * 3_600_000)} AND hour < ${range.to}`;
  if (filter.accountId !== undefined) clause = sql`${clause} AND account_id = ${filter.accountId}`;
  if (filter.capsule !== undefined) clause = sql`${clause} AND capsule = ${filter.capsule}`;
  if (filter.projectId !== undefined) clause = sql`${clause} AND project_id = ${filter.projectId}`;
  if (filter.types && filter.types.length > 0) clause = sql`${clause} AND type IN ${filter.types}`;
  return clause;
}

export interface SeriesPoint {
  t: string;
  events: number;
  failures: number;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  amountMicroUsd: number;
  spendMicroUsd: number;
  earningsMicroUsd: number;
  revenueMicroUsd: number;
}

/** A time series from the hourly rollup, one point per bucket that has data. */
export async function series(env: ClickHouseEnv, range: Range, filter: UsageFilter): Promise<SeriesPoint[]> {
  const rows = await queryRows(
    env,
    sql`SELECT toString(${bucket(range.interval, HOUR)}) AS bucket, sum(events) AS n_events, sum(failures) AS n_failures,
          sum(input_tokens) AS n_in, sum(output_tokens) AS n_out, sum(amount_micro_usd) AS n_amount, ${MONEY}
        FROM usage_hourly WHERE ${where(range, filter)} GROUP BY bucket ORDER BY bucket`,
    bucketRow,
  );
  return rows.map((r) => ({
    t: `${r.bucket.replace(" ", "T")}Z`,
    events: r.n_events,
    failures: r.n_failures,
    inputTokens: r.n_in,
    outputTokens: r.n_out,
    totalTokens: r.n_in + r.n_out,
    amountMicroUsd: r.n_amount,
    spendMicroUsd: r.n_spend,
    earningsMicroUsd: r.n_earnings,
    revenueMicroUsd: r.n_revenue,
  }));
}

export const GROUP_BY = {
  day: sql`toString(toDate(hour))`,
  capsule: sql`capsule`,
  project: sql`project_id`,
  model: sql`model`,
  account: sql`account_id`,
  type: sql`type`,
} as const;
export type GroupBy = keyof typeof GROUP_BY;

export interface UsageItem {
  key: string;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  events: number;
  failures: number;
  amountMicroUsd: number;
  spendMicroUsd: number;
  earningsMicroUsd: number;
  revenueMicroUsd: number;
}

/** Totals grouped by one dimension, largest first (by day: in date order). */
export async function grouped(
  env: ClickHouseEnv,
  range: Range,
  filter: UsageFilter,
  by: GroupBy,
  limit = 1000,
): Promise<UsageItem[]> {
  const order = by === "day" ? sql`key` : sql`total DESC, key`;
  const rows = await queryRows(
    env,
    sql`SELECT ${GROUP_BY[by]} AS key, sum(events) AS n_events, sum(failures) AS n_failures, sum(input_tokens) AS n_in,
          sum(output_tokens) AS n_out, sum(input_tokens) + sum(output_tokens) AS total, sum(amount_micro_usd) AS n_amount,
          ${MONEY}
        FROM usage_hourly WHERE ${where(range, filter)} GROUP BY key ORDER BY ${order} LIMIT ${limit}`,
    bucketRow.omit({ bucket: true }).extend({ key: z.string(), total: num }),
  );
  return rows.map((r) => ({
    key: r.key,
    inputTokens: r.n_in,
    outputTokens: r.n_out,
    totalTokens: r.n_in + r.n_out,
    events: r.n_events,
    failures: r.n_failures,
    amountMicroUsd: r.n_amount,
    spendMicroUsd: r.n_spend,
    earningsMicroUsd: r.n_earnings,
    revenueMicroUsd: r.n_revenue,
  }));
}

/** Distinct accounts with any event in the range (raw events, deduplicated by id through FINAL). */
export async function activeAccounts(env: ClickHouseEnv, range: Range): Promise<number> {
  const [row] = await queryRows(
    env,
    sql`SELECT uniqExact(account_id) AS n FROM events FINAL WHERE time >= ${range.from} AND time < ${range.to} AND account_id != ''`,
    z.object({ n: num }),
  );
  return row?.n ?? 0;
}

/** Recent raw events of the given types (security and policy feeds), newest first. */
export async function recentEvents(env: ClickHouseEnv, range: Range, types: string[], limit = 100) {
  return queryRows(
    env,
    sql`SELECT id, type, toString(time) AS at, account_id, subject, data FROM events FINAL
        WHERE time >= ${range.from} AND time < ${range.to} AND type IN ${types} ORDER BY time DESC LIMIT ${limit}`,
    z.object({
      id: z.string(),
      type: z.string(),
      at: z.string(),
      account_id: z.string(),
      subject: z.string(),
      data: z.string(),
    }),
  );
}

/** Average of a numeric data field per bucket from raw events (e.g. rating stars), using visitParamExtract. */
export async function averageField(
  env: ClickHouseEnv,
  range: Range,
  type: string,
  field: string,
  filter: { capsule?: string },
) {
  if (!/^[A-Za-z]+$/.test(field)) throw new TypeError("bad field");
  let clause = sql`time >= ${range.from} AND time < ${range.to} AND type = ${type}`;
  if (filter.capsule !== undefined) clause = sql`${clause} AND capsule = ${filter.capsule}`;
  return queryRows(
    env,
    sql`SELECT toString(${bucket(range.interval, sql`toStartOfHour(time)`)}) AS bucket, avg(visitParamExtractFloat(data, ${field})) AS value, count() AS n
        FROM events FINAL WHERE ${clause} GROUP BY bucket ORDER BY bucket`,
    z.object({ bucket: z.string(), value: num, n: num }),
  );
}

/** Renders rows as CSV (RFC 4180 quoting, formula-safe). */
export function toCsv(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return "";
  const headers = Object.keys(rows[0]!);
  const cell = (v: unknown) => {
    let s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    // Text that a spreadsheet would run as a formula is defused with a leading apostrophe.
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return `${[headers.join(","), ...rows.map((r) => headers.map((h) => cell(r[h])).join(","))].join("\r\n")}\r\n`;
}

/**
 * Daily token totals (recorded usage) and spend (the charges the filter's account or project paid) per UTC day
 * for the forecast, oldest first. A day with charges but no usage (per-execution prices) still counts.
 */
export async function dailyHistory(
  env: ClickHouseEnv,
  from: Date,
  to: Date,
  filter: Omit<UsageFilter, "types">,
) {
  const types = [USAGE_EVENT, CHARGE_EVENT];
  const rows = await queryRows(
    env,
    sql`SELECT toString(toDate(hour, 'UTC')) AS day,
          sumIf(input_tokens + output_tokens, type = ${USAGE_EVENT}) AS n_tokens,
          sumIf(amount_micro_usd, type = ${CHARGE_EVENT}) AS n_amount
        FROM usage_hourly WHERE ${where({ from, to, interval: "day" }, { ...filter, types })} GROUP BY day ORDER BY day`,
    z.object({ day: z.string(), n_tokens: num, n_amount: num }),
  );
  return rows.map((r) => ({ day: r.day, tokens: r.n_tokens, spendMicroUsd: r.n_amount }));
}
