import { z } from "zod";
import { type ClickHouseEnv, queryRows } from "../analytics/clickhouse";
import { sql } from "../analytics/sql";
import type { Database } from "../db/client";
import { AppError } from "../errors";
import { adjustmentsFor, chargesFor, earningsByMonth } from "./ledger";

const PERIOD = /^(\d{4})-(0[1-9]|1[0-2])$/;

export function monthBounds(period: string): { start: Date; end: Date } {
  const match = period.match(PERIOD);
  if (!match)
    throw new AppError("VALIDATION_FAILED", "The period is YYYY-MM", {
      issues: [{ path: "period", message: "not YYYY-MM" }],
    });
  const start = new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, 1));
  const end = new Date(Date.UTC(Number(match[1]), Number(match[2]), 1));
  return { start, end };
}

const num = z.coerce.number();

/**
 * A month's invoice, computed from the recorded charge events (so it can be reproduced from them to the
 * micro-dollar), with the month's discounts then credits applied. `ledgerMicroUsd` is the same sum read from
 * the D1 ledger: the two agree once every event has reached ClickHouse.
 */
export async function invoiceFor(env: ClickHouseEnv, db: Database, accountId: string, period: string) {
  const { start, end } = monthBounds(period);
  const lines = await queryRows(
    env,
    // The daily charge rollup, not the raw events: retention drops raw days, and an invoice must not change.
    sql`SELECT capsule, model, sum(charges) AS n_exec, sum(tokens) AS n_tokens, sum(amount_micro_usd) AS n_amount
        FROM charges_daily
        WHERE account_id = ${accountId} AND day >= toDate(${start}) AND day < toDate(${end})
        GROUP BY capsule, model ORDER BY n_amount DESC, capsule, model`,
    z.object({ capsule: z.string(), model: z.string(), n_exec: num, n_tokens: num, n_amount: num }),
  );
  const subtotal = lines.reduce((n, l) => n + l.n_amount, 0);
  const adjustments = await adjustmentsFor(db, accountId, period);
  const percent = Math.min(
    100,
    adjustments.filter((a) => a.kind === "discount").reduce((n, a) => n + a.percent, 0),
  );
  const discount = Math.floor((subtotal * percent) / 100);
  const credits = adjustments.filter((a) => a.kind === "credit").reduce((n, a) => n + a.amountMicroUsd, 0);
  const creditsApplied = Math.min(credits, subtotal - discount);
  return {
    period,
    currency: "USD",
    lines: lines.map((l) => ({
      capsule: l.capsule,
      model: l.model === "" ? null : l.model,
      executions: l.n_exec,
      tokens: l.n_tokens,
      amountMicroUsd: l.n_amount,
    })),
    subtotalMicroUsd: subtotal,
    discounts: adjustments
      .filter((a) => a.kind === "discount")
      .map((a) => ({ percent: a.percent, reason: a.reason })),
    discountMicroUsd: discount,
    credits: adjustments
      .filter((a) => a.kind === "credit")
      .map((a) => ({ amountMicroUsd: a.amountMicroUsd, reason: a.reason })),
    creditsAppliedMicroUsd: creditsApplied,
    totalMicroUsd: subtotal - discount - creditsApplied,
    ledgerMicroUsd: await chargesFor(db, accountId, period),
  };
}

/**
 * An author's monthly earnings statement from the ledger. A finished month pays out when its earnings plus
 * what was held before reach the minimum; otherwise it is held and carried into the next month.
 */
export async function payoutStatement(
  db: Database,
  accountId: string,
  minimumMicroUsd: number,
  now = new Date(),
) {
  const current = now.toISOString().slice(0, 7);
  let carried = 0;
  const months: {
    period: string;
    executions: number;
    earnedMicroUsd: number;
    carriedInMicroUsd: number;
    payableMicroUsd: number;
    status: "accruing" | "payable" | "held";
  }[] = [];
  for (const row of await earningsByMonth(db, accountId)) {
    const earned = Number(row.earned);
    const available = carried + earned;
    const status = row.period >= current ? "accruing" : available >= minimumMicroUsd ? "payable" : "held";
    months.push({
      period: row.period,
      executions: Number(row.executions),
      earnedMicroUsd: earned,
      carriedInMicroUsd: carried,
      payableMicroUsd: status === "payable" ? available : 0,
      status,
    });
    carried = status === "payable" ? 0 : available;
  }
  return { minimumPayoutMicroUsd: minimumMicroUsd, months, heldMicroUsd: carried };
}
