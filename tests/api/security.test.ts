import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../workers/api/app";
import { api, BASE, signup } from "../helpers";

/** The API with CORS_ORIGINS set, as a deployment that lists its browser origins runs it. */
async function withOrigins(origins: string, request: Request): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(request, { ...env, CORS_ORIGINS: origins }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

describe("security headers and CORS", () => {
  it("sends strict security headers on API answers", async () => {
    const res = await api("/v1/capsules");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
  });

  it("gives CORS headers to no origin unless configured", async () => {
    const res = await api("/v1/capsules", { headers: { origin: "https://evil.example" } });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const preflight = await api("/v1/capsules", {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("CORS for configured origins", () => {
  const origins = "https://app.example, https://admin.example";

  it("answers a listed origin's request and preflight, and no other origin", async () => {
    const res = await withOrigins(
      origins,
      new Request(`${BASE}/v1/capsules`, { headers: { origin: "https://admin.example" } }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://admin.example");
    expect(res.headers.get("access-control-expose-headers")).toContain("X-Request-Id");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");

    const preflight = await withOrigins(
      origins,
      new Request(`${BASE}/v1/projects`, {
        method: "OPTIONS",
        headers: {
          origin: "https://app.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      }),
    );
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("POST");
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(preflight.headers.get("access-control-allow-credentials")).toBeNull();

    for (const origin of ["https://evil.example", "https://app.example.evil.example", "null"]) {
      const other = await withOrigins(origins, new Request(`${BASE}/v1/capsules`, { headers: { origin } }));
      expect(other.headers.get("access-control-allow-origin"), origin).toBeNull();
    }
  });
});

describe("/v1/api-keys", () => {
  it("creates extra keys, lists prefixes only, and revokes a key so it stops working at once", async () => {
    const user = await signup();
    const created = await api("/v1/api-keys", { method: "POST", token: user.apiKey });
    expect(created.status).toBe(201);
    const { key, apiKey } = (await created.json()) as { key: { id: string; prefix: string }; apiKey: string };
    expect(apiKey.startsWith(key.prefix)).toBe(true);
    expect((await api("/v1/installs", { token: apiKey })).status).toBe(200);
    const list = (await (await api("/v1/api-keys", { token: user.apiKey })).json()) as {
      items: { id: string; prefix: string }[];
    };
    expect(list.items).toHaveLength(2);
    expect(JSON.stringify(list)).not.toContain(apiKey);
    expect((await api(`/v1/api-keys/${key.id}`, { method: "DELETE", token: user.apiKey })).status).toBe(204);
    expect((await api("/v1/installs", { token: apiKey })).status).toBe(401);
    expect((await api(`/v1/api-keys/${key.id}`, { method: "DELETE", token: user.apiKey })).status).toBe(404);
  });

  it("keeps keys to their account and validates ids", async () => {
    const user = await signup();
    const other = await signup();
    const { key } = (await (await api("/v1/api-keys", { method: "POST", token: user.apiKey })).json()) as {
      key: { id: string };
    };
    expect((await api(`/v1/api-keys/${key.id}`, { method: "DELETE", token: other.apiKey })).status).toBe(404);
    expect((await api("/v1/api-keys/nope", { method: "DELETE", token: user.apiKey })).status).toBe(400);
    expect((await api("/v1/api-keys")).status).toBe(401);
  });

  it("lets an admin issue a recovery key for an account", async () => {
    const user = await signup();
    const res = await api(`/v1/accounts/${user.handle}/api-keys`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
    });
    expect(res.status).toBe(201);
    const { apiKey } = (await res.json()) as { apiKey: string };
    expect((await api("/v1/installs", { token: apiKey })).status).toBe(200);
    expect(
      (await api(`/v1/accounts/${user.handle}/api-keys`, { method: "POST", token: user.apiKey })).status,
    ).toBe(403);
    expect(
      (await api("/v1/accounts/nobody-at-all/api-keys", { method: "POST", token: env.SOMA_ADMIN_TOKEN }))
        .status,
    ).toBe(404);
  });
});
