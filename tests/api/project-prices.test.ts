import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { api, errorOf, manifest, tarGz, upload } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

const GOOD = `export default { async run(input) {
  return { files: [{ path: (input.name ?? "m") + ".py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

let author: Awaited<ReturnType<typeof signup>>;
let paid = "";
let metered = "";
let free = "";

async function publishPriced(name: string, pricing: { model: string; amountUsd: number }): Promise<void> {
  const doc = manifest({ name, permissions: [] });
  (doc.spec as Record<string, unknown>).pricing = pricing;
  (doc.spec as Record<string, unknown>).tokenEstimate = { planning: 0, execution: 1000 };
  const res = await upload(
    author.apiKey,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "dist/main.js", body: GOOD },
    ]),
  );
  expect(res.status, await res.clone().text()).toBe(201);
}

beforeAll(async () => {
  await publishReviewer();
  author = await signup();
  paid = `${author.handle}/paid`;
  metered = `${author.handle}/metered`;
  free = `${author.handle}/free`;
  await publishPriced(paid, { model: "per_execution", amountUsd: 0.25 });
  await publishPriced(metered, { model: "per_1k_tokens", amountUsd: 0.002 });
  await publishWorker(author.apiKey, free, GOOD);
  await publishWorker(
    author.apiKey,
    `${author.handle}/plans-paid`,
    `export default { async run() { return { tasks: [{ id: "bought", capsule: ${JSON.stringify(paid)} }] }; } };`,
    { runtime: "planner" },
  );
});

const graph = (...capsules: string[]) => ({
  tasks: capsules.map((capsule, i) => ({ id: `t${i}`, capsule, inputs: { name: `t${i}` } })),
});

async function projectCount(token: string): Promise<number> {
  return ((await (await api("/v1/projects", { token })).json()) as { items: unknown[] }).items.length;
}

describe("paid capsules in projects", () => {
  it("refuses a project running paid capsules whose price was not accepted, naming them and their prices", async () => {
    const buyer = await signup();
    const res = await createProject(buyer.apiKey, {
      name: "unaccepted",
      spec: graph(free, paid, metered, paid),
      budget: { tokens: 100_000 },
      // Accepting another amount is not accepting the price in force.
      acceptPrices: [{ capsule: paid, model: "per_execution", amountUsd: 0.2 }],
    });
    expect(res.status).toBe(422);
    const error = await errorOf(res);
    expect(error.code).toBe("PRICE_NOT_ACCEPTED");
    expect(error.message).toContain(paid);
    expect(error.details).toEqual({
      prices: [
        { capsule: paid, model: "per_execution", amountUsd: 0.25, tasks: ["t1", "t3"] },
        { capsule: metered, model: "per_1k_tokens", amountUsd: 0.002, tasks: ["t2"] },
      ],
    });
    expect(await projectCount(buyer.apiKey)).toBe(0);
  });

  it("runs and charges them once the request accepts the prices in force", async () => {
    const buyer = await signup();
    const res = await createProject(buyer.apiKey, {
      name: "accepted",
      spec: graph(free, paid, metered),
      budget: { tokens: 100_000 },
      acceptPrices: [
        { capsule: paid, model: "per_execution", amountUsd: 0.25 },
        { capsule: metered, model: "per_1k_tokens", amountUsd: 0.002 },
      ],
    });
    expect(res.status, await res.clone().text()).toBe(201);
    const { project } = (await res.json()) as { project: { id: string } };
    expect((await waitForStatus(buyer.apiKey, project.id, ["completed", "failed"])).status).toBe("completed");
  });

  it("takes the price accepted by an install, until the price in force changes", async () => {
    const buyer = await signup();
    const install = await api("/v1/installs", {
      method: "POST",
      token: buyer.apiKey,
      json: {
        capsule: paid,
        acceptPermissions: [],
        acceptPrices: [{ capsule: paid, model: "per_execution", amountUsd: 0.25 }],
      },
    });
    expect(install.status, await install.clone().text()).toBe(201);
    const ok = await createProject(buyer.apiKey, {
      name: "installed",
      spec: graph(paid),
      budget: { tokens: 100_000 },
    });
    expect(ok.status, await ok.clone().text()).toBe(201);

    // A decrease applies at once: the install accepted the old price, so the new one needs accepting.
    const lowered = await api(`/v1/capsules/${paid}/pricing`, {
      method: "PUT",
      token: author.apiKey,
      json: { model: "per_execution", amountUsd: 0.1 },
    });
    expect(lowered.status).toBe(200);
    const refused = await createProject(buyer.apiKey, {
      name: "repriced",
      spec: graph(paid),
      budget: { tokens: 100_000 },
    });
    expect(refused.status).toBe(422);
    expect((await errorOf(refused)).details).toEqual({
      prices: [{ capsule: paid, model: "per_execution", amountUsd: 0.1, tasks: ["t0"] }],
    });
  });

  it("needs nothing for free capsules", async () => {
    const buyer = await signup();
    const res = await createProject(buyer.apiKey, {
      name: "free",
      spec: graph(free),
      budget: { tokens: 100_000 },
    });
    expect(res.status).toBe(201);
  });

  it("holds a planner's paid capsules to the prices accepted when the project was created", async () => {
    const buyer = await signup();
    const start = (acceptPrices: unknown[]) =>
      createProject(buyer.apiKey, {
        name: "planned",
        spec: { planner: `${author.handle}/plans-paid` },
        budget: { tokens: 100_000 },
        acceptPrices,
      });
    const refused = await start([]);
    expect(refused.status, await refused.clone().text()).toBe(201);
    const failed = await waitForStatus(
      buyer.apiKey,
      ((await refused.json()) as { project: { id: string } }).project.id,
      ["failed", "completed"],
    );
    expect(failed.status).toBe("failed");
    expect(failed.failureReason).toContain(`Accept the price of ${paid}`);
    const { pricing } = (await (await api(`/v1/capsules/${paid}/pricing`)).json()) as {
      pricing: { current: { model: string; amountUsd: number } };
    };
    const accepted = await start([{ capsule: paid, ...pricing.current }]);
    const done = await waitForStatus(
      buyer.apiKey,
      ((await accepted.json()) as { project: { id: string } }).project.id,
      ["failed", "completed"],
    );
    expect(done.status, String(done.failureReason)).toBe("completed");
  });
});
