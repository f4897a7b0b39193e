import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { api, signup, uniqueHandle } from "../helpers";

interface SecurityEvent {
  id: string;
  type: string;
  account_id: string;
  data: { address?: string | null; path?: string; reason?: string; handle?: string; to?: string[] };
}

const randomAddress = () => `203.0.${Math.floor(Math.random() * 255)}.${Math.floor(Math.random() * 255)}`;

/** Polls the admin feed until `ready` holds for its security events. */
async function feedUntil(ready: (events: SecurityEvent[]) => boolean): Promise<SecurityEvent[]> {
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await api(`/v1/analytics/admin?from=${from}`, { token: env.SOMA_ADMIN_TOKEN });
    expect(res.status).toBe(200);
    const events = ((await res.json()) as { securityEvents: SecurityEvent[] }).securityEvents;
    if (ready(events) || Date.now() > deadline) return events;
    await new Promise((r) => setTimeout(r, 300));
  }
}

// Windows are whole minutes: start well inside one so a test's requests share it.
async function withinOneWindow(neededMs: number): Promise<void> {
  const intoWindow = Date.now() % 60_000;
  if (intoWindow > 60_000 - neededMs) await new Promise((r) => setTimeout(r, 60_000 - intoWindow + 100));
}

describe("security events in the admin feed", () => {
  it("records refused credentials once per source and minute, and not a missing credential", async () => {
    await withinOneWindow(10_000);
    const address = randomAddress();
    const anonymous = randomAddress();
    for (let i = 0; i < 5; i++) {
      const res = await api("/v1/installs", {
        token: `soma_${"x".repeat(43)}`,
        headers: { "cf-connecting-ip": address },
      });
      expect(res.status).toBe(401);
    }
    const exchange = await api("/v1/auth/token", {
      method: "POST",
      json: { apiKey: `soma_${"y".repeat(43)}` },
      headers: { "cf-connecting-ip": address },
    });
    expect(exchange.status).toBe(401);
    expect((await api("/v1/installs", { headers: { "cf-connecting-ip": anonymous } })).status).toBe(401);
    const events = await feedUntil((e) =>
      e.some((x) => x.type === "soma.security.auth_failed" && x.data.address === address),
    );
    const mine = events.filter((x) => x.type === "soma.security.auth_failed" && x.data.address === address);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.data).toMatchObject({
      path: "/v1/installs",
      reason: "The API key is unknown or revoked",
    });
    expect(JSON.stringify(mine[0])).not.toContain("xxxxxxxx");
    expect(events.some((x) => x.data.address === anonymous)).toBe(false);
  });

  it("records a rate-limited caller without failing or slowing the refusal", async () => {
    await withinOneWindow(15_000);
    const address = randomAddress();
    const signupFrom = () => {
      const handle = uniqueHandle("sec");
      return api("/v1/accounts", {
        method: "POST",
        json: { handle, email: `${handle}@example.com` },
        headers: { "cf-connecting-ip": address },
      });
    };
    for (let i = 0; i < 10; i++) expect((await signupFrom()).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await signupFrom()).status).toBe(429);
    const events = await feedUntil((e) =>
      e.some((x) => x.type === "soma.security.rate_limited" && x.data.address === address),
    );
    const mine = events.filter((x) => x.type === "soma.security.rate_limited" && x.data.address === address);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.data).toMatchObject({ path: "/v1/accounts" });
  });

  it("records role changes with the account and its new roles", async () => {
    const user = await signup();
    const res = await api(`/v1/accounts/${user.handle}/roles`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: { roles: ["reviewer"] },
    });
    expect(res.status).toBe(200);
    const events = await feedUntil((e) =>
      e.some((x) => x.type === "soma.account.roles_changed" && x.account_id === user.id),
    );
    const change = events.find((x) => x.type === "soma.account.roles_changed" && x.account_id === user.id);
    expect(change?.data).toMatchObject({ handle: user.handle, to: ["user", "reviewer"] });
  });
});
