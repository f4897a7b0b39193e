import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { storeEvents } from "../../workers/shared/analytics/events";
import { cloudEvent } from "../../workers/shared/events/outbox";
import { api, signup } from "../helpers";

// Retention drops whole days for every account and ClickHouse is shared by all test files: only this file
// writes events on this day.
const DAY = "2025-02-11";
const PERIOD = DAY.slice(0, 7);

interface InvoiceBody {
  invoice: {
    lines: {
      capsule: string;
      model: string | null;
      executions: number;
      tokens: number;
      amountMicroUsd: number;
    }[];
    subtotalMicroUsd: number;
    totalMicroUsd: number;
  };
}

async function invoice(token: string): Promise<InvoiceBody["invoice"]> {
  const res = await api(`/v1/invoices/${PERIOD}`, { token });
  expect(res.status, await res.clone().text()).toBe(200);
  return ((await res.json()) as InvoiceBody).invoice;
}

describe("invoices and retention", () => {
  it("keeps a month's invoice to the micro-dollar after retention drops the raw events of its days", async () => {
    const buyer = await signup();
    // Charges as the ledger records them, stored by the events consumer's own code.
    const charges = [1_250, 2_500, 40_000].map((amountMicroUsd, i) => {
      const event = cloudEvent("soma.charge.recorded", "acme/tool@1.0.0", {
        accountId: buyer.id,
        capsule: i < 2 ? "acme/tool" : "acme/other",
        pricingModel: i < 2 ? "per_execution" : "per_1k_tokens",
        tokens: i < 2 ? 0 : 8_000,
        amountMicroUsd,
      });
      return { ...event, time: `${DAY}T0${i + 1}:00:00Z` };
    });
    await storeEvents(env, charges);

    const before = await invoice(buyer.apiKey);
    expect(before.subtotalMicroUsd).toBe(43_750);
    expect(before.lines).toEqual([
      { capsule: "acme/other", model: null, executions: 1, tokens: 8_000, amountMicroUsd: 40_000 },
      { capsule: "acme/tool", model: null, executions: 2, tokens: 0, amountMicroUsd: 3_750 },
    ]);

    const retention = await api("/v1/admin/analytics/retention", {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: { retentionDays: 30, days: [DAY] },
    });
    expect(retention.status, await retention.clone().text()).toBe(200);
    expect(await retention.json()).toMatchObject({ dropped: [DAY] });

    expect(await invoice(buyer.apiKey)).toEqual(before);
  });
});
