import { describe, expect, it } from "vitest";
import { adminToken, api, countRows, errorOf, signup, uniqueHandle } from "../helpers";

describe("POST /v1/accounts", () => {
  it("creates an account and returns its API key once, storing only a hash", async () => {
    const handle = uniqueHandle("acct");
    const res = await api("/v1/accounts", {
      method: "POST",
      json: { handle, email: `${handle}@example.com` },
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { account: { handle: string; roles: string[] }; apiKey: string };
    expect(body.account.handle).toBe(handle);
    expect(body.account.roles).toEqual(["user"]);
    expect(body.apiKey).toMatch(/^soma_[A-Za-z0-9_-]{43}$/);
    const { env } = await import("cloudflare:workers");
    const stored = await env.DB.prepare("SELECT key_hash FROM api_keys").all<{ key_hash: string }>();
    expect(stored.results.some((r) => r.key_hash === body.apiKey)).toBe(false);
  });

  it("rejects a taken handle with 409 and adds no row", async () => {
    const { handle } = await signup();
    const before = await countRows("accounts");
    const res = await api("/v1/accounts", {
      method: "POST",
      json: { handle, email: `other-${handle}@example.com` },
    });
    expect(res.status).toBe(409);
    expect((await errorOf(res)).code).toBe("CONFLICT");
    expect(await countRows("accounts")).toBe(before);
  });

  it.each([
    [{ handle: "Bad Handle", email: "a@example.com" }, "handle"],
    [{ handle: "ok-handle", email: "not-an-email" }, "email"],
    [{ handle: "ok-handle" }, "email"],
    [{ handle: "ok-handle", email: "a@example.com", admin: true }, "(root)"],
  ])("rejects %j naming the field %s", async (json, field) => {
    const before = await countRows("accounts");
    const res = await api("/v1/accounts", { method: "POST", json });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.code).toBe("VALIDATION_FAILED");
    expect((error.details as { issues: { path: string }[] }).issues.map((i) => i.path)).toContain(field);
    expect(await countRows("accounts")).toBe(before);
  });

  it("rejects malformed JSON and non-JSON bodies", async () => {
    const malformed = await api("/v1/accounts", {
      method: "POST",
      body: "{not json",
      headers: { "content-type": "application/json" },
    });
    expect(malformed.status).toBe(400);
    const wrongType = await api("/v1/accounts", {
      method: "POST",
      body: "handle=x",
      headers: { "content-type": "text/plain" },
    });
    expect(wrongType.status).toBe(415);
  });

  it("rate limits sign-ups per client address", async () => {
    const ip = "192.0.2.77";
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const handle = uniqueHandle("rl");
      const res = await api("/v1/accounts", {
        method: "POST",
        json: { handle, email: `${handle}@example.com` },
        headers: { "cf-connecting-ip": ip },
      });
      statuses.push(res.status);
    }
    expect(statuses.slice(0, 10).every((s) => s === 201)).toBe(true);
    expect(statuses.slice(10)).toEqual([429, 429]);
  });
});

describe("POST /v1/accounts/:handle/roles", () => {
  it("lets an admin grant the reviewer role", async () => {
    const { handle } = await signup();
    const res = await api(`/v1/accounts/${handle}/roles`, {
      method: "POST",
      token: adminToken(),
      json: { roles: ["reviewer"] },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { account: { roles: string[] } }).account.roles).toEqual([
      "user",
      "reviewer",
    ]);
  });

  it("refuses a non-admin with 403 and anonymous callers with 401", async () => {
    const target = await signup();
    const caller = await signup();
    const asUser = await api(`/v1/accounts/${target.handle}/roles`, {
      method: "POST",
      token: caller.apiKey,
      json: { roles: ["admin"] },
    });
    expect(asUser.status).toBe(403);
    const anonymous = await api(`/v1/accounts/${target.handle}/roles`, {
      method: "POST",
      json: { roles: ["admin"] },
    });
    expect(anonymous.status).toBe(401);
  });

  it("rejects unknown roles and unknown handles", async () => {
    const { handle } = await signup();
    const bad = await api(`/v1/accounts/${handle}/roles`, {
      method: "POST",
      token: adminToken(),
      json: { roles: ["root"] },
    });
    expect(bad.status).toBe(400);
    const missing = await api("/v1/accounts/nobody-here/roles", {
      method: "POST",
      token: adminToken(),
      json: { roles: [] },
    });
    expect(missing.status).toBe(404);
  });
});
