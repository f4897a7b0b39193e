import { describe, expect, it } from "vitest";
import { api, bundle, countObjects, countRows, errorOf, signup, uniqueHandle, upload } from "../helpers";

// Rate-limit windows align to the wall clock: start well inside one so every request of a test shares it.
async function withinOneWindow(neededMs: number): Promise<void> {
  const intoWindow = Date.now() % 60_000;
  if (intoWindow > 60_000 - neededMs) await new Promise((r) => setTimeout(r, 60_000 - intoWindow + 100));
}

async function expectRateLimited(res: Response): Promise<void> {
  expect(res.status).toBe(429);
  const error = await errorOf(res);
  expect(error.code).toBe("RATE_LIMITED");
  expect(error.message).toMatch(/too many requests/i);
  expect(error.requestId).toBeTruthy();
}

const usageEvent = (id: string, tokens: number) => ({
  specversion: "1.0",
  id,
  source: "soma://integration",
  type: "soma.usage.tokens",
  time: new Date().toISOString(),
  data: { inputTokens: tokens, outputTokens: 0 },
});

describe("rate limits", () => {
  it("refuses the 11th sign-up a minute from one address with 429, creating no account", async () => {
    await withinOneWindow(15_000);
    const ip = "198.51.100.11";
    const signupFrom = (handle: string) =>
      api("/v1/accounts", {
        method: "POST",
        json: { handle, email: `${handle}@example.com` },
        headers: { "cf-connecting-ip": ip },
      });
    for (let i = 0; i < 10; i++) expect((await signupFrom(uniqueHandle("rls"))).status).toBe(201);
    const accounts = await countRows("accounts");
    const keys = await countRows("api_keys");
    const refusedHandle = uniqueHandle("rls");
    await expectRateLimited(await signupFrom(refusedHandle));
    expect(await countRows("accounts")).toBe(accounts);
    expect(await countRows("api_keys")).toBe(keys);
  });

  it("refuses the 61st token exchange a minute from one address with 429, issuing no token", async () => {
    const user = await signup();
    await withinOneWindow(20_000);
    const exchange = () =>
      api("/v1/auth/token", {
        method: "POST",
        json: { apiKey: user.apiKey },
        headers: { "cf-connecting-ip": "198.51.100.61" },
      });
    for (let i = 0; i < 60; i++) expect((await exchange()).status).toBe(200);
    const refused = await exchange();
    expect(refused.headers.get("content-type")).toMatch(/application\/json/);
    const text = await refused.clone().text();
    expect(text).not.toContain("accessToken");
    await expectRateLimited(refused);
  });

  it("refuses the 31st submission a minute from one account with 429, storing no submission or bundle", async () => {
    const author = await signup();
    await withinOneWindow(20_000);
    // Refused uploads (here: not gzip) still count, so the limit cannot be probed for free.
    for (let i = 0; i < 30; i++) {
      const res = await upload(author.apiKey, new Uint8Array([1, 2, 3]), "application/octet-stream");
      expect(res.status).toBe(415);
    }
    const submissions = await countRows("submissions");
    const objects = await countObjects();
    await expectRateLimited(await upload(author.apiKey, await bundle({ name: `${author.handle}/limited` })));
    expect(await countRows("submissions")).toBe(submissions);
    expect(await countObjects()).toBe(objects);
  });

  it("refuses the 21st community write a minute from one account with 429, creating no collection", async () => {
    const user = await signup();
    await withinOneWindow(15_000);
    const create = (title: string) =>
      api("/v1/collections", { method: "POST", token: user.apiKey, json: { title, visibility: "private" } });
    for (let i = 0; i < 20; i++) {
      const res = await create(`list ${i}`);
      expect(res.status, await res.clone().text()).toBe(201);
    }
    const collections = await countRows("collections");
    await expectRateLimited(await create("one too many"));
    expect(await countRows("collections")).toBe(collections);
  });

  it("refuses event ingestion past 3,000 requests a minute per account with 429, queueing nothing", async () => {
    const user = await signup();
    await withinOneWindow(40_000);
    // Invalid bodies are refused after the limiter counts them: cheap requests that still use up the limit.
    for (let sent = 0; sent < 3000; sent += 100) {
      const statuses = await Promise.all(
        Array.from({ length: 100 }, () =>
          api("/v1/events", { method: "POST", token: user.apiKey, json: [] }).then((r) => r.status),
        ),
      );
      expect(statuses.every((s) => s === 400)).toBe(true);
    }
    const refused = await api("/v1/events", {
      method: "POST",
      token: user.apiKey,
      json: [usageEvent(`evt-${crypto.randomUUID()}`, 1_000_000)],
    });
    await expectRateLimited(refused);
    // The refused event never reached the queue: the account's usage stays empty once the pipeline settles.
    await new Promise((r) => setTimeout(r, 2500));
    const today = new Date().toISOString().slice(0, 10);
    const usage = await api(`/v1/usage?from=${today}&to=${today}`, {
      token: user.apiKey,
      headers: { "cf-connecting-ip": "198.51.100.99" },
    });
    expect(usage.status).toBe(200);
    expect(((await usage.json()) as { items: unknown[] }).items).toEqual([]);
  }, 120_000);
});
