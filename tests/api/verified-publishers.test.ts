import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { adminToken, api, countRows, errorOf, grantRoles, publish, signup, uniqueHandle } from "../helpers";

interface Listed {
  name: string;
  publisher: { handle: string; verified: boolean };
}

function setVerified(handle: string, verified: unknown, token = adminToken()): Promise<Response> {
  return api(`/v1/accounts/${handle}/verified`, { method: "PUT", token, json: { verified } });
}

async function listing(query: string): Promise<Listed[]> {
  const res = await api(`/v1/capsules?${query}`);
  expect(res.status, await res.clone().text()).toBe(200);
  return ((await res.json()) as { items: Listed[] }).items;
}

async function auditEntriesFor(accountId: string): Promise<{ action: string; actor: string }[]> {
  const { results } = await env.DB.prepare(
    "SELECT action, actor FROM audit_log WHERE target = ? ORDER BY seq",
  )
    .bind(`account:${accountId}`)
    .all<{ action: string; actor: string }>();
  return results.filter((e) => e.action === "account.verified" || e.action === "account.unverified");
}

describe("PUT /v1/accounts/:handle/verified", () => {
  // One tag shared by both publishers' capsules, unique to this file, so the listings see only them.
  const tag = uniqueHandle("vt").slice(0, 32);
  let verified: Awaited<ReturnType<typeof signup>>;
  let other: Awaited<ReturnType<typeof signup>>;

  beforeAll(async () => {
    verified = await signup();
    other = await signup();
    await publish(verified.apiKey, { name: `${verified.handle}/checked`, tags: [tag] });
    await publish(other.apiKey, { name: `${other.handle}/unchecked`, tags: [tag] });
  });

  it("lets an admin verify a publisher, audited once, and the catalog filters and marks its capsules", async () => {
    const res = await setVerified(verified.handle, true);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { account: { handle: string; verifiedAt: string | null } };
    expect(body.account.handle).toBe(verified.handle);
    expect(body.account.verifiedAt).toEqual(expect.any(String));

    const again = await setVerified(verified.handle, true);
    expect(again.status).toBe(200);
    expect(((await again.json()) as typeof body).account.verifiedAt).toBe(body.account.verifiedAt);
    expect(await auditEntriesFor(verified.id)).toEqual([
      { action: "account.verified", actor: "admin-token" },
    ]);

    const onlyVerified = await listing(`tag=${tag}&verified=true`);
    expect(onlyVerified.map((i) => i.name)).toEqual([`${verified.handle}/checked`]);
    expect(onlyVerified[0]?.publisher).toEqual({ handle: verified.handle, verified: true });

    const everyone = await listing(`tag=${tag}&sort=name`);
    expect(everyone.map((i) => [i.name, i.publisher.verified])).toEqual([
      [`${verified.handle}/checked`, true],
      [`${other.handle}/unchecked`, false],
    ]);
    const unverifiedOnly = await listing(`tag=${tag}&verified=false`);
    expect(unverifiedOnly.map((i) => i.name)).toEqual([`${other.handle}/unchecked`]);

    const searched = await listing(`q=checked&tag=${tag}&verified=true`);
    expect(searched.map((i) => i.name)).toEqual([`${verified.handle}/checked`]);

    const detail = await api(`/v1/capsules/${verified.handle}/checked`);
    expect(detail.status).toBe(200);
    expect(((await detail.json()) as { capsule: Listed }).capsule.publisher).toEqual({
      handle: verified.handle,
      verified: true,
    });
  });

  it("unverifies a publisher: its capsules leave the verified listing and show unverified", async () => {
    const handle = uniqueHandle("unv");
    const author = await signup(handle);
    const ownTag = uniqueHandle("ut").slice(0, 32);
    await publish(author.apiKey, { name: `${handle}/gone`, tags: [ownTag] });
    expect((await setVerified(handle, true)).status).toBe(200);
    const res = await setVerified(handle, false);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { account: { verifiedAt: string | null } }).account.verifiedAt).toBeNull();
    expect((await auditEntriesFor(author.id)).map((e) => e.action)).toEqual([
      "account.verified",
      "account.unverified",
    ]);
    expect(await listing(`tag=${ownTag}&verified=true`)).toEqual([]);
    const detail = await api(`/v1/capsules/${handle}/gone`);
    expect(((await detail.json()) as { capsule: Listed }).capsule.publisher.verified).toBe(false);
  });

  it("records the verification through the outbox for the admin security feed", async () => {
    const author = await signup();
    expect((await setVerified(author.handle, true)).status).toBe(200);
    const from = new Date(Date.now() - 3_600_000).toISOString();
    const deadline = Date.now() + 15_000;
    let found: { data: { handle?: string; verified?: boolean } } | undefined;
    while (!found && Date.now() < deadline) {
      const feed = await api(`/v1/analytics/admin?from=${from}`, { token: adminToken() });
      expect(feed.status).toBe(200);
      const events = (
        (await feed.json()) as {
          securityEvents: {
            type: string;
            account_id: string;
            data: { handle?: string; verified?: boolean };
          }[];
        }
      ).securityEvents;
      found = events.find(
        (e) => e.type === "soma.account.verification_changed" && e.account_id === author.id,
      );
      if (!found) await new Promise((r) => setTimeout(r, 300));
    }
    expect(found?.data).toMatchObject({ handle: author.handle, verified: true });
  });

  it.each([
    [{ verified: "yes" }, "verified"],
    [{}, "verified"],
    [{ verified: true, by: "me" }, "(root)"],
  ])("rejects the body %j naming the field %s", async (json, field) => {
    const res = await api(`/v1/accounts/${other.handle}/verified`, {
      method: "PUT",
      token: adminToken(),
      json,
    });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.code).toBe("VALIDATION_FAILED");
    expect((error.details as { issues: { path: string }[] }).issues.map((i) => i.path)).toContain(field);
  });

  it("answers 404 for an unknown handle and records nothing", async () => {
    const before = await countRows("audit_log");
    const res = await setVerified(uniqueHandle("nobody"), true);
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe("NOT_FOUND");
    expect(await countRows("audit_log")).toBe(before);
  });

  it.each([["yes"], ["1"], ["TRUE"], [""]])(
    "rejects the catalog filter verified=%s with 400",
    async (value) => {
      const res = await api(`/v1/capsules?verified=${value}`);
      expect(res.status).toBe(400);
      expect((await errorOf(res)).code).toBe("VALIDATION_FAILED");
    },
  );

  it("refuses anonymous callers (401), users and reviewers (403), and leaves the account unverified", async () => {
    const target = await signup();
    const user = await signup();
    const reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    const anonymous = await api(`/v1/accounts/${target.handle}/verified`, {
      method: "PUT",
      json: { verified: true },
    });
    expect(anonymous.status).toBe(401);
    expect((await setVerified(target.handle, true, user.apiKey)).status).toBe(403);
    expect((await setVerified(target.handle, true, reviewer.apiKey)).status).toBe(403);
    // Not even an account verifies itself.
    expect((await setVerified(target.handle, true, target.apiKey)).status).toBe(403);
    const row = await env.DB.prepare("SELECT verified_at FROM accounts WHERE id = ?")
      .bind(target.id)
      .first<{ verified_at: string | null }>();
    expect(row?.verified_at).toBeNull();
  });
});
