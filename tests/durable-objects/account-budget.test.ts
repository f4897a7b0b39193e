import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { AccountBudget, BudgetConfig } from "../../durable-objects/account-budget";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";

const unique = () => crypto.randomUUID().replace(/-/g, "");

function budgetOf(accountId: string) {
  return env.ACCOUNT_BUDGET.get(env.ACCOUNT_BUDGET.idFromName(accountId));
}

const config = (over: Partial<BudgetConfig>): BudgetConfig => ({
  limitTokens: null,
  limitMicroUsd: null,
  period: "month",
  softPct: 80,
  hardPct: 100,
  rollover: false,
  ...over,
});

const previousPeriod = () => {
  const d = new Date();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() - 1);
  return d.toISOString().slice(0, 7);
};

/** Settled usage of last month, as the budget would have recorded it then. */
async function spentLastMonth(accountId: string, tokens: number, microUsd: number): Promise<void> {
  await runInDurableObject(budgetOf(accountId), async (_instance: AccountBudget, state) => {
    state.storage.sql.exec(
      `INSERT INTO reservations (attempt_id, project_id, period, tokens, settled, spent_tokens, spent_micro_usd, created_at, micro_usd)
       VALUES (?, 'p', ?, ?, 1, ?, ?, ?, ?)`,
      `old_${unique()}`,
      previousPeriod(),
      tokens,
      tokens,
      microUsd,
      Date.now() - 40 * 86_400_000,
      microUsd,
    );
  });
}

describe("AccountBudget", () => {
  it("raises the soft alert, and its event, when spend crosses the soft share of a money limit", async () => {
    const accountId = `acc_${unique()}`;
    const budget = budgetOf(accountId);
    await budget.configure(accountId, config({ limitMicroUsd: 1_000_000, softPct: 50 }));
    expect(await budget.reserve("a1", "p", 10, 300_000)).toEqual({ ok: true });
    await budget.settle("a1", 10, 300_000);
    expect((await budget.status(accountId)).alerts).toEqual([]);
    expect(await budget.reserve("a2", "p", 10, 250_000)).toEqual({ ok: true });
    await budget.settle("a2", 10, 250_000);
    const status = await budget.status(accountId);
    expect(status.alerts.map((a) => a.level)).toEqual(["soft"]);
    expect(status.spentMicroUsd).toBe(550_000);
    const id = `budget:${accountId}:${status.period}:soft`;
    const deadline = Date.now() + 10_000;
    let rows: { data: string }[] = [];
    while (rows.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      rows = await queryRows(
        env,
        sql`SELECT data FROM events FINAL WHERE id = ${id} AND type = 'soma.budget.threshold'`,
        z.object({ data: z.string() }),
      );
    }
    expect(JSON.parse(rows[0]?.data ?? "{}")).toMatchObject({
      accountId,
      level: "soft",
      spentMicroUsd: 550_000,
      limitMicroUsd: 1_000_000,
      softPct: 50,
    });
  });

  it("rolls last month's unused tokens and money into this month when rollover is on", async () => {
    const accountId = `acc_${unique()}`;
    const budget = budgetOf(accountId);
    await budget.configure(
      accountId,
      config({ limitTokens: 10_000, limitMicroUsd: 2_000_000, rollover: true, softPct: 100 }),
    );
    await spentLastMonth(accountId, 4_000, 500_000);
    const status = await budget.status(accountId);
    expect(status).toMatchObject({
      carriedTokens: 6_000,
      limitTokens: 16_000,
      carriedMicroUsd: 1_500_000,
      limitMicroUsd: 3_500_000,
    });
    // Past this month's own limit, within the carried-over one; then the combined limit holds exactly.
    expect(await budget.reserve("r1", "p", 15_000, 3_000_000)).toEqual({ ok: true });
    expect((await budget.reserve("r2", "p", 1_001, 0)).ok).toBe(false);
    expect((await budget.reserve("r3", "p", 0, 500_001)).ok).toBe(false);
    expect(await budget.reserve("r4", "p", 1_000, 500_000)).toEqual({ ok: true });
  });

  it("carries nothing over with rollover off", async () => {
    const accountId = `acc_${unique()}`;
    const budget = budgetOf(accountId);
    await budget.configure(accountId, config({ limitTokens: 10_000, limitMicroUsd: 2_000_000 }));
    await spentLastMonth(accountId, 4_000, 500_000);
    expect(await budget.status(accountId)).toMatchObject({
      carriedTokens: 0,
      limitTokens: 10_000,
      carriedMicroUsd: 0,
      limitMicroUsd: 2_000_000,
    });
    expect((await budget.reserve("r1", "p", 10_001, 0)).ok).toBe(false);
  });
});
