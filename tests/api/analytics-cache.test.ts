import { describe, expect, it } from "vitest";
import { api, signup } from "../helpers";

const usage = (id: string, inputTokens: number) => ({
  specversion: "1.0",
  id,
  source: "soma://integration",
  type: "soma.usage.tokens",
  time: new Date(Date.now() - 3_600_000).toISOString(),
  data: { inputTokens, outputTokens: 0 },
});

interface Me {
  totals: { tokens: number };
}

describe("analytics answers cached with the Cache API", () => {
  it("serves a second identical query within the TTL from the cache, and never to another caller", async () => {
    const alice = await signup();
    const bob = await signup();
    expect(
      (await api("/v1/events", { method: "POST", token: alice.apiKey, json: [usage("c1", 1234)] })).status,
    ).toBe(202);
    // Wait until Alice's usage is visible, on a URL of its own so the cache test below starts cold.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const res = await api(`/v1/analytics/me?interval=day&poll=${Date.now()}`, { token: alice.apiKey });
      if (((await res.json()) as Me).totals.tokens === 1234 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const path = `/v1/analytics/me?interval=day&from=${new Date(Date.now() - 86_400_000).toISOString()}`;
    const first = await api(path, { token: alice.apiKey });
    expect(first.status).toBe(200);
    expect(first.headers.get("x-cache")).toBe("MISS");
    const firstBody = await first.text();
    // The entry is written after the response (waitUntil); a moment later, well inside the 2 s TTL, it is there.
    await new Promise((r) => setTimeout(r, 100));
    const second = await api(path, { token: alice.apiKey });
    expect(second.headers.get("x-cache")).toBe("HIT");
    expect(await second.text()).toBe(firstBody);
    expect(second.headers.get("x-request-id")).not.toBe(first.headers.get("x-request-id"));
    expect(second.headers.get("cache-control")).toBeNull();
    expect((JSON.parse(firstBody) as Me).totals.tokens).toBe(1234);
    // Bob asks the very same URL inside Alice's TTL: his own answer, computed for him.
    const other = await api(path, { token: bob.apiKey });
    expect(other.status).toBe(200);
    expect(other.headers.get("x-cache")).toBe("MISS");
    expect(((await other.json()) as Me).totals.tokens).toBe(0);
    await new Promise((r) => setTimeout(r, 100));
    const otherAgain = await api(path, { token: bob.apiKey });
    expect(otherAgain.headers.get("x-cache")).toBe("HIT");
    expect(((await otherAgain.json()) as Me).totals.tokens).toBe(0);
  });
});
