import { describe, expect, it } from "vitest";
import { api, countRows, errorOf, signup } from "../helpers";

type Scope = "full" | "read" | "runner" | "events";

async function scopedKey(
  owner: { apiKey: string },
  scopes: Scope[],
): Promise<{ id: string; apiKey: string }> {
  const res = await api("/v1/api-keys", { method: "POST", token: owner.apiKey, json: { scopes } });
  expect(res.status, await res.clone().text()).toBe(201);
  const body = (await res.json()) as { key: { id: string; scopes: Scope[] }; apiKey: string };
  expect(body.key.scopes).toEqual(scopes);
  return { id: body.key.id, apiKey: body.apiKey };
}

const usageEvent = (id: string) => ({
  specversion: "1.0",
  id,
  source: "soma://integration",
  type: "soma.usage.tokens",
  time: new Date().toISOString(),
  data: { inputTokens: 1, outputTokens: 1 },
});

describe("API key scopes", () => {
  it("creates full keys by default and lists every key's scopes", async () => {
    const owner = await signup();
    const created = await api("/v1/api-keys", { method: "POST", token: owner.apiKey });
    expect(((await created.json()) as { key: { scopes: string[] } }).key.scopes).toEqual(["full"]);
    await scopedKey(owner, ["read"]);
    const list = (await (await api("/v1/api-keys", { token: owner.apiKey })).json()) as {
      items: { scopes: string[] }[];
    };
    expect(list.items.map((k) => k.scopes)).toEqual([["full"], ["full"], ["read"]]);
  });

  it("holds a read-only key to GET requests, on every route", async () => {
    const owner = await signup();
    const reader = await scopedKey(owner, ["read"]);
    expect((await api("/v1/installs", { token: reader.apiKey })).status).toBe(200);
    expect((await api("/v1/api-keys", { token: reader.apiKey })).status).toBe(200);
    const keysBefore = await countRows("api_keys");
    const refused = await api("/v1/api-keys", { method: "POST", token: reader.apiKey });
    expect(refused.status).toBe(403);
    const error = await errorOf(refused);
    expect(error.code).toBe("FORBIDDEN");
    expect(error.details).toEqual({ scopes: ["read"] });
    expect(await countRows("api_keys")).toBe(keysBefore);
    expect(
      (await api("/v1/projects", { method: "POST", token: reader.apiKey, json: { name: "x" } })).status,
    ).toBe(403);
    expect((await api("/v1/events", { method: "POST", token: reader.apiKey, json: [] })).status).toBe(403);
  });

  it("lets an events key ingest events and nothing else", async () => {
    const owner = await signup();
    const ingest = await scopedKey(owner, ["events"]);
    const res = await api("/v1/events", {
      method: "POST",
      token: ingest.apiKey,
      json: [usageEvent(`evt-${crypto.randomUUID()}`)],
    });
    expect(res.status, await res.clone().text()).toBe(202);
    expect((await api("/v1/installs", { token: ingest.apiKey })).status).toBe(403);
    expect((await api("/v1/usage", { token: ingest.apiKey })).status).toBe(403);
  });

  it("lets a runner key reach the runner API and reads, but not writes elsewhere", async () => {
    const owner = await signup();
    const runner = await scopedKey(owner, ["runner"]);
    const claim = await api("/v1/runners/claim", {
      method: "POST",
      token: runner.apiKey,
      json: { runnerId: "scoped-runner", waitSeconds: 0 },
    });
    expect(claim.status).toBe(204);
    expect((await api("/v1/projects", { token: runner.apiKey })).status).toBe(200);
    expect((await api("/v1/api-keys", { method: "POST", token: runner.apiKey })).status).toBe(403);
    expect((await api("/v1/events", { method: "POST", token: runner.apiKey, json: [] })).status).toBe(403);
  });

  it("carries a key's scopes into the access token it is exchanged for", async () => {
    const owner = await signup();
    const reader = await scopedKey(owner, ["read"]);
    const exchanged = await api("/v1/auth/token", { method: "POST", json: { apiKey: reader.apiKey } });
    const { accessToken } = (await exchanged.json()) as { accessToken: string };
    const claims = JSON.parse(atob(accessToken.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/"))) as {
      scope: string;
    };
    expect(claims.scope).toBe("read");
    expect((await api("/v1/installs", { token: accessToken })).status).toBe(200);
    expect((await api("/v1/api-keys", { method: "POST", token: accessToken })).status).toBe(403);
  });

  it("holds a token offered as a WebSocket subprotocol to its key's scopes too", async () => {
    const owner = await signup();
    const ingest = await scopedKey(owner, ["events"]);
    const exchanged = await api("/v1/auth/token", { method: "POST", json: { apiKey: ingest.apiKey } });
    const { accessToken } = (await exchanged.json()) as { accessToken: string };
    const res = await api(`/v1/projects/${"a".repeat(64)}/ws`, {
      headers: { upgrade: "websocket", "sec-websocket-protocol": `soma.live.v1, soma.bearer.${accessToken}` },
    });
    expect(res.status).toBe(403);
    expect((await errorOf(res)).details).toEqual({ scopes: ["events"] });
  });

  it("refuses unknown scopes and keeps revocation working for scoped keys", async () => {
    const owner = await signup();
    const bad = await api("/v1/api-keys", {
      method: "POST",
      token: owner.apiKey,
      json: { scopes: ["root"] },
    });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe("VALIDATION_FAILED");
    const empty = await api("/v1/api-keys", { method: "POST", token: owner.apiKey, json: { scopes: [] } });
    expect(empty.status).toBe(400);
    const reader = await scopedKey(owner, ["read"]);
    expect((await api(`/v1/api-keys/${reader.id}`, { method: "DELETE", token: owner.apiKey })).status).toBe(
      204,
    );
    expect((await api("/v1/installs", { token: reader.apiKey })).status).toBe(401);
  });
});
