import { describe, expect, it } from "vitest";
import { api, publish, signup } from "../helpers";

/** Repeats a GET until the answer comes from the cache (the entry is written after the first answer). */
async function untilHit(path: string, token?: string): Promise<Response> {
  for (let i = 0; i < 20; i++) {
    const res = await api(path, { token });
    if (res.headers.get("X-Cache") === "HIT") return res;
    await res.arrayBuffer();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${path} was never answered from the cache`);
}

describe("response cache", () => {
  it("answers a repeated catalog page from the cache with the same body and no cache header of its own", async () => {
    const author = await signup();
    const tag = `probe${author.handle.replace(/[^a-z0-9]/g, "").slice(-10)}`;
    await publish(author.apiKey, {
      name: `${author.handle}/cache-probe`,
      description: "Probes the cache.",
      tags: [tag],
    });
    const path = `/v1/capsules?tag=${tag}`;
    const first = await api(path);
    expect(first.status).toBe(200);
    expect(first.headers.get("X-Cache")).toBe("MISS");
    const body = await first.json();
    const hit = await untilHit(path);
    expect(await hit.json()).toEqual(body);
    expect(hit.headers.get("Cache-Control")).toBeNull();
    expect(hit.headers.get("X-Request-Id")).not.toBe(first.headers.get("X-Request-Id"));
  });

  it("leaves text searches to the ranking reuse, not the Cache API", async () => {
    const author = await signup();
    await publish(author.apiKey, { name: `${author.handle}/cache-text`, description: "Probes text search." });
    for (let i = 0; i < 3; i++) {
      const res = await api(`/v1/capsules?q=${author.handle}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("X-Cache")).toBeNull();
      await res.arrayBuffer();
    }
  });

  it("keeps a caller's cached analytics to that caller", async () => {
    const alice = await signup();
    const bob = await signup();
    const path = "/v1/analytics/me?from=2026-01-01&to=2026-01-31";
    const aliceFirst = await api(path, { token: alice.apiKey });
    expect(aliceFirst.status, await aliceFirst.clone().text()).toBe(200);
    await untilHit(path, alice.apiKey);
    const bobs = await api(path, { token: bob.apiKey });
    expect(bobs.status).toBe(200);
    expect(bobs.headers.get("X-Cache")).toBe("MISS");
  });
});
