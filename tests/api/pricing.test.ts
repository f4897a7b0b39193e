import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { z } from "zod";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";
import { isIncrease } from "../../workers/shared/economics/prices";
import { api, errorOf, manifest, signup, tarGz, upload } from "../helpers";

type Account = Awaited<ReturnType<typeof signup>>;
let author: Account;
let name = "";

interface Pricing {
  current: { model: string; amountUsd: number } | null;
  upcoming: { model: string; amountUsd: number; effectiveAt: string } | null;
}

const pricing = async (): Promise<Pricing> =>
  ((await (await api(`/v1/capsules/${name}/pricing`)).json()) as { pricing: Pricing }).pricing;
const setPrice = (token: string, body: Record<string, unknown>) =>
  api(`/v1/capsules/${name}/pricing`, { method: "PUT", token, json: body });
const install = (token: string, acceptPrices?: unknown) =>
  api("/v1/installs", {
    method: "POST",
    token,
    json: { capsule: name, acceptPermissions: [], ...(acceptPrices ? { acceptPrices } : {}) },
  });

beforeAll(async () => {
  author = await signup();
  name = `${author.handle}/priced`;
  const doc = manifest({ name, permissions: [] });
  (doc.spec as Record<string, unknown>).pricing = { model: "per_execution", amountUsd: 0.25 };
  const res = await upload(
    author.apiKey,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "dist/main.js", body: "export default { run: () => 1 };\n" },
    ]),
  );
  expect(res.status).toBe(201);
});

describe("paid capsule pricing", () => {
  it("takes the initial price from the manifest", async () => {
    expect(await pricing()).toEqual({ current: { model: "per_execution", amountUsd: 0.25 }, upcoming: null });
  });

  it("installs a paid capsule only when the caller accepts the price in force", async () => {
    const buyer = await signup();
    const refused = await install(buyer.apiKey);
    expect(refused.status).toBe(422);
    const error = await errorOf(refused);
    expect(error.code).toBe("PRICE_NOT_ACCEPTED");
    expect(error.details).toEqual({ prices: [{ capsule: name, model: "per_execution", amountUsd: 0.25 }] });
    expect(
      (await install(buyer.apiKey, [{ capsule: name, model: "per_execution", amountUsd: 0.2 }])).status,
    ).toBe(422);
    const ok = await install(buyer.apiKey, [{ capsule: name, model: "per_execution", amountUsd: 0.25 }]);
    expect(ok.status).toBe(201);
    const body = (await ok.json()) as { lock: { packages: { price: unknown }[] } };
    expect(body.lock.packages[0]?.price).toEqual({ model: "per_execution", amountUsd: 0.25 });
  });

  it("applies a decrease at once and announces an increase 14 days ahead to every installer", async () => {
    const installer = await signup();
    expect(
      (await install(installer.apiKey, [{ capsule: name, model: "per_execution", amountUsd: 0.25 }])).status,
    ).toBe(201);
    expect((await setPrice(author.apiKey, { model: "per_execution", amountUsd: 0.1 })).status).toBe(200);
    expect((await pricing()).current).toEqual({ model: "per_execution", amountUsd: 0.1 });

    const before = Date.now();
    const raised = await setPrice(author.apiKey, { model: "per_1k_tokens", amountUsd: 0.5 });
    expect(raised.status).toBe(200);
    const after = await pricing();
    expect(after.current).toEqual({ model: "per_execution", amountUsd: 0.1 });
    expect(after.upcoming).toMatchObject({ model: "per_1k_tokens", amountUsd: 0.5 });
    const lead = Date.parse(after.upcoming!.effectiveAt) - before;
    expect(lead).toBeGreaterThanOrEqual(14 * 86_400_000 - 5_000);
    expect(lead).toBeLessThanOrEqual(14 * 86_400_000 + 5_000);

    // The notice reaches the installer as an event (and, through it, their webhooks).
    const deadline = Date.now() + 15_000;
    let notices: { n: number }[] = [];
    while (Date.now() < deadline) {
      notices = await queryRows(
        env,
        sql`SELECT count() AS n FROM events FINAL WHERE type = 'soma.price.changed' AND account_id = ${installer.id} AND capsule = ${name}`,
        z.object({ n: z.coerce.number() }),
      );
      if ((notices[0]?.n ?? 0) >= 2) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(notices[0]?.n).toBe(2);
  });

  it("lets only the owner (or an admin) change the price, with a valid body", async () => {
    const stranger = await signup();
    expect((await setPrice(stranger.apiKey, { model: "free", amountUsd: 0 })).status).toBe(403);
    expect(
      (await api(`/v1/capsules/${name}/pricing`, { method: "PUT", json: { model: "free", amountUsd: 0 } }))
        .status,
    ).toBe(401);
    expect((await setPrice(author.apiKey, { model: "free", amountUsd: 3 })).status).toBe(400);
    expect((await setPrice(author.apiKey, { model: "gold", amountUsd: 3 })).status).toBe(400);
    expect((await api(`/v1/capsules/${author.handle}/none/pricing`)).status).toBe(404);
    expect((await setPrice(env.SOMA_ADMIN_TOKEN, { model: "free", amountUsd: 0 })).status).toBe(200);
    expect((await pricing()).current).toEqual({ model: "free", amountUsd: 0 });
  });

  it("treats going free or cheaper as a decrease and any other change as an increase", () => {
    expect(
      isIncrease({ model: "per_execution", amountMicroUsd: 10 }, { model: "free", amountMicroUsd: 0 }),
    ).toBe(false);
    expect(
      isIncrease(
        { model: "per_execution", amountMicroUsd: 10 },
        { model: "per_execution", amountMicroUsd: 9 },
      ),
    ).toBe(false);
    expect(
      isIncrease(
        { model: "per_execution", amountMicroUsd: 10 },
        { model: "per_execution", amountMicroUsd: 11 },
      ),
    ).toBe(true);
    expect(
      isIncrease({ model: "free", amountMicroUsd: 0 }, { model: "per_1k_tokens", amountMicroUsd: 1 }),
    ).toBe(true);
    expect(
      isIncrease(
        { model: "per_execution", amountMicroUsd: 10 },
        { model: "per_1k_tokens", amountMicroUsd: 1 },
      ),
    ).toBe(true);
  });
});
