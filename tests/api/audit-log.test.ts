import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { adminToken, api, errorOf, grantRoles, publish, signup } from "../helpers";

interface Entry {
  seq: number;
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  details: Record<string, unknown>;
  prevHash: string | null;
  hash: string | null;
}
interface Page {
  items: Entry[];
  nextAfter: number | null;
  lastSeq: number;
}

// The chain recomputed here from the API's answer alone, with code of its own (not the Worker's).
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function allEntries(): Promise<{ items: Entry[]; lastSeq: number }> {
  const items: Entry[] = [];
  let after = 0;
  let lastSeq = 0;
  for (;;) {
    const res = await api(`/v1/admin/audit?after=${after}&limit=7`, { token: adminToken() });
    expect(res.status).toBe(200);
    const page = (await res.json()) as Page;
    items.push(...page.items);
    lastSeq = page.lastSeq;
    if (page.nextAfter === null) return { items, lastSeq };
    after = page.nextAfter;
  }
}

async function chainProblems(items: Entry[], lastSeq: number): Promise<string[]> {
  const problems: string[] = [];
  let prev = "0".repeat(64);
  let expectedSeq = 1;
  for (const e of items) {
    if (e.seq !== expectedSeq) problems.push(`seq ${expectedSeq} missing before ${e.seq}`);
    if (e.prevHash !== prev) problems.push(`seq ${e.seq}: prevHash does not link`);
    const { seq, id, at, actor, action, target, details } = e;
    const hash = await sha256(`${prev}\n${canonical({ action, actor, at, details, id, seq, target })}`);
    if (e.hash !== hash) problems.push(`seq ${e.seq}: hash does not match its content`);
    prev = e.hash ?? "";
    expectedSeq = e.seq + 1;
  }
  if ((items.at(-1)?.seq ?? 0) !== lastSeq) problems.push(`entries after ${items.at(-1)?.seq} missing`);
  return problems;
}

describe("audit log", () => {
  let author: Awaited<ReturnType<typeof signup>>;
  let reviewer: Awaited<ReturnType<typeof signup>>;

  beforeAll(async () => {
    author = await signup();
    reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    await api("/v1/auth/token", { method: "POST", json: { apiKey: author.apiKey } });
    const created = await api("/v1/api-keys", {
      method: "POST",
      token: author.apiKey,
      json: { scopes: ["read"] },
    });
    const { key } = (await created.json()) as { key: { id: string } };
    await api(`/v1/api-keys/${key.id}`, { method: "DELETE", token: author.apiKey });
    await publish(author.apiKey, { name: `${author.handle}/audited` });
    const base = `/v1/capsules/${author.handle}/audited/versions/1.0.0`;
    await api(`${base}/deprecate`, { method: "POST", token: author.apiKey, json: { message: "use 2.x" } });
    await api(`${base}/yank`, { method: "POST", token: author.apiKey, json: { reason: "leaks a token" } });
    const adjustment = await api("/v1/admin/adjustments", {
      method: "POST",
      token: adminToken(),
      json: {
        account: author.handle,
        period: new Date().toISOString().slice(0, 7),
        kind: "credit",
        amountUsd: 5,
        reason: "goodwill",
      },
    });
    expect(adjustment.status, await adjustment.clone().text()).toBe(201);
    const linked = await api("/v1/integrations/github", {
      method: "POST",
      token: author.apiKey,
      json: { repository: `${author.handle}/capsules` },
    });
    expect(linked.status, await linked.clone().text()).toBe(201);
    const { link } = (await linked.json()) as { link: { id: string } };
    expect(
      (await api(`/v1/integrations/github/${link.id}`, { method: "DELETE", token: author.apiKey })).status,
    ).toBe(204);
  });

  it("records every security-relevant action with who did it to what", async () => {
    const { items } = await allEntries();
    const mine = items.filter(
      (e) =>
        e.target.includes(author.id) || e.details.accountId === author.id || e.target.includes(author.handle),
    );
    expect(mine.map((e) => e.action)).toEqual([
      "account.created",
      "auth.token_issued",
      "api_key.created",
      "api_key.revoked",
      "capsule.published",
      "capsule.deprecated",
      "capsule.yanked",
      "billing.adjustment_granted",
      "integration.github_linked",
      "integration.github_unlinked",
    ]);
    expect(mine.find((e) => e.action === "capsule.yanked")).toMatchObject({
      actor: author.id,
      target: `capsule:${author.handle}/audited@1.0.0`,
      details: { reason: "leaks a token" },
    });
    expect(mine.find((e) => e.action === "billing.adjustment_granted")?.actor).toBe("admin-token");
    const roles = items.find(
      (e) => e.action === "account.roles_changed" && e.target === `account:${reviewer.id}`,
    );
    expect(roles?.details).toMatchObject({ from: ["user"], to: ["user", "reviewer"] });
  });

  it("chains every entry to the one before it, as an independent recomputation confirms", async () => {
    const { items, lastSeq } = await allEntries();
    expect(items.length).toBeGreaterThanOrEqual(10);
    expect(await chainProblems(items, lastSeq)).toEqual([]);
  });

  it("writes nothing for an action that did not happen", async () => {
    const before = (await allEntries()).items.length;
    const missing = await api("/v1/api-keys/key_0123456789abcdef0123456789abcdef", {
      method: "DELETE",
      token: author.apiKey,
    });
    expect(missing.status).toBe(404);
    expect(
      (
        await api("/v1/accounts/nobody-here/roles", {
          method: "POST",
          token: adminToken(),
          json: { roles: [] },
        })
      ).status,
    ).toBe(404);
    expect((await allEntries()).items.length).toBe(before);
  });

  it("refuses to update or delete entries in the database itself", async () => {
    const [first] = (await allEntries()).items;
    await expect(
      env.DB.prepare("UPDATE audit_log SET target = 'account:someone-else' WHERE seq = ?")
        .bind(first!.seq)
        .run(),
    ).rejects.toThrow(/append-only/);
    await expect(
      env.DB.prepare("DELETE FROM audit_log WHERE seq = ?").bind(first!.seq).run(),
    ).rejects.toThrow(/append-only/);
    await expect(
      env.DB.prepare("UPDATE audit_log SET hash = 'f00d' WHERE seq = ?").bind(first!.seq).run(),
    ).rejects.toThrow(/append-only/);
  });

  it("is readable by admins only, and validates its query", async () => {
    expect((await api("/v1/admin/audit")).status).toBe(401);
    expect((await api("/v1/admin/audit", { token: reviewer.apiKey })).status).toBe(403);
    const bad = await api("/v1/admin/audit?limit=5000", { token: adminToken() });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe("VALIDATION_FAILED");
    const page = (await (
      await api("/v1/admin/audit?after=2&limit=1", { token: adminToken() })
    ).json()) as Page;
    expect(page.items.map((e) => e.seq)).toEqual([3]);
    expect(page.nextAfter).toBe(3);
  });
});
