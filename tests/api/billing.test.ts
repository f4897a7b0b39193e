import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { database } from "../../workers/shared/db/client";
import { payoutStatement } from "../../workers/shared/economics/invoices";
import { ledgerImbalance, PLATFORM_ACCOUNT, recordExecution } from "../../workers/shared/economics/ledger";
import {
  executionCharge,
  modelCharge,
  modelPrices,
  splitCharge,
} from "../../workers/shared/economics/pricing";
import { api, manifest, tarGz, upload } from "../helpers";
import { createProject, publishReviewer, signup, waitForStatus } from "../kamachiq-helpers";

const GOOD = `export default { async run(input) {
  return { files: [{ path: (input.name ?? "m") + ".py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

async function publishPaid(
  token: string,
  name: string,
  pricing: { model: string; amountUsd: number },
): Promise<void> {
  const doc = manifest({ name, permissions: [] });
  (doc.spec as Record<string, unknown>).pricing = pricing;
  (doc.spec as Record<string, unknown>).tokenEstimate = { planning: 0, execution: 1000 };
  const res = await upload(
    token,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "dist/main.js", body: GOOD },
    ]),
  );
  expect(res.status, await res.clone().text()).toBe(201);
}

const month = () => new Date().toISOString().slice(0, 7);

async function ledgerOf(accountId: string) {
  return (
    await env.DB.prepare(
      "SELECT kind, direction, amount_micro_usd AS amount FROM ledger_entries WHERE account_id = ? AND amount_micro_usd > 0 ORDER BY kind",
    )
      .bind(accountId)
      .all<{ kind: string; direction: string; amount: number }>()
  ).results;
}

/** Polls until the invoice shows `executions` executions (charges reach ClickHouse through the queue). */
async function invoice(token: string, executions: number) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await api(`/v1/invoices/${month()}`, { token });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      invoice: {
        lines: { capsule: string; executions: number; amountMicroUsd: number }[];
        subtotalMicroUsd: number;
        discountMicroUsd: number;
        creditsAppliedMicroUsd: number;
        totalMicroUsd: number;
        ledgerMicroUsd: number;
      };
    };
    const seen = body.invoice.lines.reduce((n, l) => n + l.executions, 0);
    if (seen >= executions || Date.now() > deadline) return body.invoice;
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("pricing arithmetic", () => {
  it("charges per execution and per 1k tokens in integer micro-dollars and splits without losing a micro-dollar", () => {
    expect(executionCharge({ model: "per_execution", amountUsd: 0.25 }, 12_345)).toBe(250_000);
    expect(executionCharge({ model: "per_1k_tokens", amountUsd: 0.002 }, 1_500)).toBe(3_000);
    expect(executionCharge({ model: "per_1k_tokens", amountUsd: 0.003 }, 333)).toBe(999);
    expect(executionCharge({ model: "free", amountUsd: 0 }, 1_000_000)).toBe(0);
    expect(splitCharge(250_000, 70)).toEqual({ author: 175_000, platform: 75_000 });
    expect(splitCharge(999, 70)).toEqual({ author: 699, platform: 300 });
  });
});

describe("paid capsule executions", () => {
  let author: Awaited<ReturnType<typeof signup>>;
  let buyer: Awaited<ReturnType<typeof signup>>;
  beforeAll(async () => {
    await publishReviewer();
    author = await signup();
    buyer = await signup();
    await publishPaid(author.apiKey, `${author.handle}/paid`, { model: "per_execution", amountUsd: 0.25 });
    const res = await createProject(buyer.apiKey, {
      name: "buying",
      spec: {
        tasks: Array.from({ length: 4 }, (_, i) => ({
          id: `p${i}`,
          capsule: `${author.handle}/paid`,
          inputs: { name: `p${i}` },
        })),
      },
      budget: { tokens: 100_000 },
      acceptPrices: [{ capsule: `${author.handle}/paid`, model: "per_execution", amountUsd: 0.25 }],
    });
    const { project } = (await res.json()) as { project: { id: string } };
    expect((await waitForStatus(buyer.apiKey, project.id, ["completed", "failed"])).status).toBe("completed");
  });

  it("records one balanced transaction per execution: buyer debit, author 70%, platform 30%", async () => {
    const deadline = Date.now() + 10_000;
    let buyerRows = await ledgerOf(buyer.id);
    while (buyerRows.length < 4 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      buyerRows = await ledgerOf(buyer.id);
    }
    expect(buyerRows).toEqual(
      Array.from({ length: 4 }, () => ({ kind: "execution_charge", direction: "debit", amount: 250_000 })),
    );
    const authorRows = await ledgerOf(author.id);
    expect(authorRows.reduce((n, r) => n + r.amount, 0)).toBe(4 * 175_000);
    expect(await ledgerImbalance(database(env.DB))).toBe(0);
    const platform = await ledgerOf(PLATFORM_ACCOUNT);
    expect(platform.length).toBeGreaterThanOrEqual(4);
    const detail = (await (await api(`/v1/capsules/${author.handle}/paid`)).json()) as {
      capsule: { executionCount: number };
    };
    expect(detail.capsule.executionCount).toBe(4);
  });

  it("invoices the month from the charge events, to the micro-dollar, with discounts then credits", async () => {
    const before = await invoice(buyer.apiKey, 4);
    expect(before.lines).toEqual([
      {
        capsule: `${author.handle}/paid`,
        model: null,
        executions: 4,
        tokens: expect.any(Number),
        amountMicroUsd: 1_000_000,
      },
    ]);
    expect(before.subtotalMicroUsd).toBe(1_000_000);
    expect(before.ledgerMicroUsd).toBe(1_000_000);
    const grant = (body: Record<string, unknown>) =>
      api("/v1/admin/adjustments", { method: "POST", token: env.SOMA_ADMIN_TOKEN, json: body });
    const admin = await signup();
    const { grantRoles } = await import("../helpers");
    await grantRoles(admin.handle, ["admin"]);
    const asAdmin = (body: Record<string, unknown>) =>
      api("/v1/admin/adjustments", { method: "POST", token: admin.apiKey, json: body });
    expect(
      (
        await asAdmin({
          account: buyer.handle,
          period: month(),
          kind: "discount",
          percent: 10,
          reason: "launch",
        })
      ).status,
    ).toBe(201);
    expect(
      (
        await asAdmin({
          account: buyer.handle,
          period: month(),
          kind: "credit",
          amountUsd: 0.5,
          reason: "apology",
        })
      ).status,
    ).toBe(201);
    expect(
      (await asAdmin({ account: buyer.handle, period: month(), kind: "credit", percent: 5, reason: "x" }))
        .status,
    ).toBe(400);
    // The bootstrap admin token administers billing too; an unknown account is a 404.
    expect(
      (await grant({ account: "nobody-here", period: month(), kind: "credit", amountUsd: 1, reason: "x" }))
        .status,
    ).toBe(404);
    expect(
      (
        await api("/v1/admin/adjustments", {
          method: "POST",
          token: buyer.apiKey,
          json: { account: buyer.handle, period: month(), kind: "credit", amountUsd: 1, reason: "x" },
        })
      ).status,
    ).toBe(403);
    const after = await invoice(buyer.apiKey, 4);
    expect(after).toMatchObject({
      subtotalMicroUsd: 1_000_000,
      discountMicroUsd: 100_000,
      creditsAppliedMicroUsd: 500_000,
      totalMicroUsd: 400_000,
    });
  });

  it("counts spend from the buyer's charges, earnings from the author's credits and revenue from the platform's share", async () => {
    interface Me {
      totals: { spendMicroUsd: number; earningsMicroUsd: number };
      byCapsule: { key: string; spendMicroUsd: number }[];
    }
    const me = async (token: string, ready: (m: Me) => boolean) => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const res = await api("/v1/analytics/me?interval=day", { token });
        expect(res.status).toBe(200);
        const body = (await res.json()) as Me;
        if (ready(body) || Date.now() > deadline) return body;
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    const buyerView = await me(buyer.apiKey, (m) => m.totals.spendMicroUsd >= 1_000_000);
    expect(buyerView.totals).toMatchObject({ spendMicroUsd: 1_000_000, earningsMicroUsd: 0 });
    // The author's earnings are not their spend.
    const authorView = await me(author.apiKey, (m) => m.totals.earningsMicroUsd >= 700_000);
    expect(authorView.totals).toMatchObject({ spendMicroUsd: 0, earningsMicroUsd: 700_000 });
    const deadline = Date.now() + 20_000;
    type Tenant = {
      accountId: string;
      spendMicroUsd: number;
      revenueMicroUsd: number;
      earningsMicroUsd: number;
    };
    let tenants: Tenant[] = [];
    for (;;) {
      const res = await api("/v1/analytics/admin?interval=day", { token: env.SOMA_ADMIN_TOKEN });
      expect(res.status).toBe(200);
      tenants = ((await res.json()) as { tenants: Tenant[] }).tenants;
      if (tenants.find((t) => t.accountId === buyer.id)?.revenueMicroUsd === 300_000 || Date.now() > deadline)
        break;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(tenants.find((t) => t.accountId === buyer.id)).toMatchObject({
      spendMicroUsd: 1_000_000,
      revenueMicroUsd: 300_000,
      earningsMicroUsd: 0,
    });
    expect(tenants.find((t) => t.accountId === author.id)).toMatchObject({
      spendMicroUsd: 0,
      revenueMicroUsd: 0,
      earningsMicroUsd: 700_000,
    });
  });

  it("refuses malformed periods and anonymous callers", async () => {
    expect((await api("/v1/invoices/2026-13", { token: buyer.apiKey })).status).toBe(400);
    expect((await api(`/v1/invoices/${month()}`)).status).toBe(401);
    expect((await api("/v1/payouts")).status).toBe(401);
  });

  it("shows the author this month's earnings as accruing", async () => {
    const res = await api("/v1/payouts", { token: author.apiKey });
    expect(res.status).toBe(200);
    const statement = (await res.json()) as {
      months: { period: string; earnedMicroUsd: number; status: string }[];
    };
    expect(statement.months).toEqual([
      expect.objectContaining({ period: month(), earnedMicroUsd: 700_000, status: "accruing" }),
    ]);
  });
});

describe("revenue share per capsule", () => {
  it("splits charges by the share an admin set: the author's statement matches and the ledger balances", async () => {
    await publishReviewer();
    const author = await signup();
    const buyer = await signup();
    const admin = await signup();
    const { grantRoles } = await import("../helpers");
    await grantRoles(admin.handle, ["admin"]);
    const name = `${author.handle}/shared`;
    await publishPaid(author.apiKey, name, { model: "per_execution", amountUsd: 0.25 });
    const share = (token: string, body: unknown, capsule = name) =>
      api(`/v1/capsules/${capsule}/revenue-share`, { method: "PUT", token, json: body });
    expect((await share(author.apiKey, { authorSharePct: 100 })).status).toBe(403);
    expect((await share(admin.apiKey, { authorSharePct: 101 })).status).toBe(400);
    expect((await share(admin.apiKey, { authorSharePct: 55.5 })).status).toBe(400);
    expect((await share(admin.apiKey, { authorSharePct: 55 }, `${author.handle}/missing`)).status).toBe(404);
    const set = await share(admin.apiKey, { authorSharePct: 55 });
    expect(set.status).toBe(200);
    expect(await set.json()).toEqual({
      revenueShare: { capsule: name, authorSharePct: 55, previousAuthorSharePct: 70 },
    });
    const res = await createProject(buyer.apiKey, {
      name: "shared",
      spec: {
        tasks: Array.from({ length: 3 }, (_, i) => ({
          id: `r${i}`,
          capsule: name,
          inputs: { name: `r${i}` },
        })),
      },
      budget: { tokens: 100_000 },
      acceptPrices: [{ capsule: name, model: "per_execution", amountUsd: 0.25 }],
    });
    const { project } = (await res.json()) as { project: { id: string } };
    expect((await waitForStatus(buyer.apiKey, project.id, ["completed", "failed"])).status).toBe("completed");
    const deadline = Date.now() + 10_000;
    let authorRows = await ledgerOf(author.id);
    while (authorRows.length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      authorRows = await ledgerOf(author.id);
    }
    // 55% of 250,000 is 137,500 per execution; the platform keeps 112,500.
    expect(authorRows).toEqual(
      Array.from({ length: 3 }, () => ({ kind: "author_earning", direction: "credit", amount: 137_500 })),
    );
    const platform = (
      await env.DB.prepare(
        "SELECT sum(amount_micro_usd) AS total FROM ledger_entries WHERE account_id = ? AND kind = 'platform_fee' AND capsule = ?",
      )
        .bind(PLATFORM_ACCOUNT, name)
        .first<{ total: number }>()
    )?.total;
    expect(platform).toBe(3 * 112_500);
    expect(await ledgerImbalance(database(env.DB))).toBe(0);
    const statement = (await (await api("/v1/payouts", { token: author.apiKey })).json()) as {
      months: { period: string; earnedMicroUsd: number; executions: number }[];
    };
    expect(statement.months).toEqual([
      expect.objectContaining({ period: month(), earnedMicroUsd: 412_500, executions: 3 }),
    ]);
  });
});

describe("payout statements", () => {
  it("hold months under the minimum and carry them until the total reaches it", async () => {
    const accountId = `acc_payout_${Date.now()}`;
    const rows: [string, number][] = [
      ["2026-07", 4_000_000],
      ["2026-08", 3_000_000],
      ["2026-09", 5_000_000],
      ["2026-10", 11_000_000],
      ["2026-11", 2_000_000],
    ];
    for (const [period, amount] of rows) {
      // Each fixture transaction balances: a buyer's debit for the author's credit.
      const sides: [string, string, string][] = [
        ["credit", accountId, "author_earning"],
        ["debit", `${accountId}_buyer`, "execution_charge"],
      ];
      for (const [direction, account, kind] of sides) {
        await env.DB.prepare(
          "INSERT INTO ledger_entries (id, tx_id, account_id, direction, kind, amount_micro_usd, period, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
          .bind(
            `led_${period}_${account}`,
            `fixture:${accountId}:${period}`,
            account,
            direction,
            kind,
            amount,
            period,
            `${period}-15T00:00:00Z`,
          )
          .run();
      }
    }
    const statement = await payoutStatement(
      database(env.DB),
      accountId,
      10_000_000,
      new Date("2026-11-20T00:00:00Z"),
    );
    expect(statement.months.map((m) => [m.period, m.status, m.carriedInMicroUsd, m.payableMicroUsd])).toEqual(
      [
        ["2026-07", "held", 0, 0],
        ["2026-08", "held", 4_000_000, 0],
        ["2026-09", "payable", 7_000_000, 12_000_000],
        ["2026-10", "payable", 0, 11_000_000],
        ["2026-11", "accruing", 0, 0],
      ],
    );
    expect(statement.heldMicroUsd).toBe(2_000_000);
  });
});

describe("model token pricing", () => {
  it("reads MODEL_PRICES and prices model tokens per 1k, ignoring unknown models and malformed prices", () => {
    const prices = modelPrices('{"gpt-test": 2000, "bad": -1, "frac": 1.5}');
    expect(prices).toEqual({ "gpt-test": 2000 });
    expect(modelPrices("not json")).toEqual({});
    expect(modelCharge(prices, "gpt-test", 1_234)).toBe(2_468);
    expect(modelCharge(prices, "other", 1_234)).toBe(0);
    expect(modelCharge(prices, null, 1_234)).toBe(0);
  });

  it("charges the owner for a failed attempt's model tokens once, balanced by platform revenue", async () => {
    // No model provider is reachable here, so the attempt's reported usage is given directly.
    const db = database(env.DB);
    const owner = `acc_model_${Date.now()}`;
    const input = {
      attemptId: `att_${crypto.randomUUID().replace(/-/g, "")}`,
      succeeded: false,
      buyerAccountId: owner,
      capsule: "acme/summarise",
      version: "1.0.0",
      tokens: 5_000,
      model: "gpt-test",
      modelPrices: { "gpt-test": 2000 },
      projectId: "p",
    };
    await recordExecution(db, input);
    await recordExecution(db, input);
    const rows = await ledgerOf(owner);
    expect(rows).toEqual([{ kind: "model_charge", direction: "debit", amount: 10_000 }]);
    expect(await ledgerImbalance(db)).toBe(0);
  });
});

describe("spend limits, enforced before each run", () => {
  let author: Awaited<ReturnType<typeof signup>>;
  beforeAll(async () => {
    await publishReviewer();
    author = await signup();
    await publishPaid(author.apiKey, `${author.handle}/metered`, { model: "per_execution", amountUsd: 0.25 });
  });

  const launch = async (token: string, body: Record<string, unknown>) => {
    const res = await createProject(token, {
      name: "spend",
      spec: {
        tasks: Array.from({ length: 5 }, (_, i) => ({
          id: `s${i}`,
          capsule: `${author.handle}/metered`,
          inputs: { name: `s${i}` },
        })),
      },
      budget: { tokens: 1_000_000 },
      maxParallelAgents: 1,
      acceptPrices: [{ capsule: `${author.handle}/metered`, model: "per_execution", amountUsd: 0.25 }],
      ...body,
    });
    expect(res.status, await res.clone().text()).toBe(201);
    return ((await res.json()) as { project: { id: string } }).project.id;
  };

  it("stops a project at its maxSpendUsd without starting a run that could pass it", async () => {
    const buyer = await signup();
    const id = await launch(buyer.apiKey, { maxSpendUsd: 0.6 });
    const done = await waitForStatus(buyer.apiKey, id, ["budget_exhausted", "completed", "failed"]);
    expect(done.status).toBe("budget_exhausted");
    expect(done.tasks.filter((t) => t.status === "completed")).toHaveLength(2);
    const charged = (await ledgerOf(buyer.id))
      .filter((r) => r.kind === "execution_charge")
      .reduce((n, r) => n + r.amount, 0);
    expect(charged).toBe(500_000);
  });

  it("stops every project of an account at its monthly spend limit", async () => {
    const buyer = await signup();
    expect(
      (await api("/v1/budgets/account", { method: "PUT", token: buyer.apiKey, json: { limitUsd: 0.75 } }))
        .status,
    ).toBe(200);
    const id = await launch(buyer.apiKey, {});
    const done = await waitForStatus(buyer.apiKey, id, ["budget_exhausted", "completed", "failed"]);
    expect(done.status).toBe("budget_exhausted");
    expect(done.failureReason).toContain("spend limit");
    expect(done.tasks.filter((t) => t.status === "completed")).toHaveLength(3);
    const status = (await (await api("/v1/budgets/account", { token: buyer.apiKey })).json()) as {
      budget: { spentMicroUsd: number };
    };
    expect(status.budget.spentMicroUsd).toBe(750_000);
  });
});
