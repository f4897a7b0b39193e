import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { api, countRows, errorOf, publish, signup } from "../helpers";

type Account = Awaited<ReturnType<typeof signup>>;

interface InstallBody {
  install: { id: string; capsule: string; version: string; permissions: string[] };
  lock: {
    packages: {
      name: string;
      version: string;
      sha256: string;
      keyid: string;
      bundleUrl: string;
      dependencies: Record<string, string>;
    }[];
  };
  warnings: string[];
}

function install(token: string, json: Record<string, unknown>): Promise<Response> {
  return api("/v1/installs", { method: "POST", token, json });
}

/** Publishes a chain root -> l1 -> l2 -> l3 -> l4 (four levels below the root) with a few siblings. */
async function publishTree(author: Account): Promise<string> {
  const n = (s: string) => `${author.handle}/${s}`;
  await publish(author.apiKey, { name: n("l4"), version: "1.0.0" });
  await publish(author.apiKey, { name: n("l4"), version: "1.3.0" });
  await publish(author.apiKey, { name: n("l4"), version: "2.0.0" });
  await publish(author.apiKey, {
    name: n("l3"),
    dependencies: { [n("l4")]: "^1.0.0" },
    permissions: ["artifacts.write"],
  });
  await publish(author.apiKey, { name: n("l2"), dependencies: { [n("l3")]: "^1.0.0" } });
  await publish(author.apiKey, { name: n("side"), dependencies: { [n("l4")]: "~1.3.0" } });
  await publish(author.apiKey, {
    name: n("l1"),
    dependencies: { [n("l2")]: "^1.0.0", [n("side")]: "^1.0.0" },
  });
  await publish(author.apiKey, { name: n("root"), dependencies: { [n("l1")]: "^1.0.0" } });
  return n("root");
}

describe("POST /v1/installs", () => {
  it("resolves four levels of dependencies to the highest satisfying versions and returns a verified lock", async () => {
    const author = await signup();
    const root = await publishTree(author);
    const user = await signup();
    const res = await install(user.apiKey, {
      capsule: root,
      range: "^1.0.0",
      acceptPermissions: ["artifacts.read", "artifacts.write"],
    });
    expect(res.status, await res.clone().text()).toBe(201);
    const body = (await res.json()) as InstallBody;
    const versions = Object.fromEntries(body.lock.packages.map((p) => [p.name.split("/")[1], p.version]));
    expect(versions).toEqual({
      root: "1.0.0",
      l1: "1.0.0",
      l2: "1.0.0",
      l3: "1.0.0",
      side: "1.0.0",
      l4: "1.3.0",
    });
    const l3 = body.lock.packages.find((p) => p.name.endsWith("/l3"));
    expect(l3?.dependencies).toEqual({ [`${author.handle}/l4`]: "1.3.0" });
    expect(l3?.sha256).toMatch(/^[a-f0-9]{64}$/);
    expect(l3?.keyid).toMatch(/^SHA256:/);
    const bundle = await api(new URL(l3!.bundleUrl).pathname);
    expect(bundle.status).toBe(200);
    expect(body.install.permissions).toEqual(["artifacts.read", "artifacts.write"]);
    const detail = (await (await api(`/v1/capsules/${root}`)).json()) as {
      capsule: { installCount: number };
    };
    expect(detail.capsule.installCount).toBe(1);
  });

  it("refuses unaccepted permissions, listing them, and records nothing", async () => {
    const author = await signup();
    const root = await publishTree(author);
    const user = await signup();
    const before = await countRows("installs");
    const res = await install(user.apiKey, { capsule: root, acceptPermissions: ["artifacts.read"] });
    expect(res.status).toBe(422);
    const error = await errorOf(res);
    expect(error.code).toBe("PERMISSIONS_NOT_ACCEPTED");
    expect((error.details as { missing: string[] }).missing).toEqual(["artifacts.write"]);
    expect(await countRows("installs")).toBe(before);
  });

  it("names the cycle when dependencies loop", async () => {
    const author = await signup();
    const n = (s: string) => `${author.handle}/${s}`;
    await publish(author.apiKey, { name: n("a"), version: "1.0.0" });
    await publish(author.apiKey, { name: n("b"), dependencies: { [n("a")]: "^1.0.0" } });
    await publish(author.apiKey, { name: n("a"), version: "1.1.0", dependencies: { [n("b")]: "^1.0.0" } });
    const user = await signup();
    const res = await install(user.apiKey, { capsule: n("a"), acceptPermissions: ["artifacts.read"] });
    expect(res.status).toBe(422);
    const error = await errorOf(res);
    expect(error.code).toBe("DEPENDENCY_CYCLE");
    expect(error.message).toContain(`${n("a")}@1.1.0 -> ${n("b")}@1.0.0 -> ${n("a")}@1.1.0`);
  });

  it("reports a conflict when no single version satisfies every range", async () => {
    const author = await signup();
    const n = (s: string) => `${author.handle}/${s}`;
    await publish(author.apiKey, { name: n("base"), version: "1.0.0" });
    await publish(author.apiKey, { name: n("base"), version: "2.0.0" });
    await publish(author.apiKey, { name: n("old"), dependencies: { [n("base")]: "^1.0.0" } });
    await publish(author.apiKey, { name: n("new"), dependencies: { [n("base")]: "^2.0.0" } });
    await publish(author.apiKey, { name: n("app"), dependencies: { [n("old")]: "*", [n("new")]: "*" } });
    const user = await signup();
    const res = await install(user.apiKey, { capsule: n("app"), acceptPermissions: ["artifacts.read"] });
    expect(res.status).toBe(409);
    const error = await errorOf(res);
    expect(error.code).toBe("DEPENDENCY_CONFLICT");
    expect(error.message).toContain(n("old"));
    expect(error.message).toContain(n("new"));
  });

  it("refuses to install a bundle whose stored bytes no longer match", async () => {
    const author = await signup();
    const sub = await publish(author.apiKey, { name: `${author.handle}/tampered` });
    const key = `capsules/${sub.name}/${sub.version}/bundle.tar.gz`;
    const original = new Uint8Array(await (await env.BUNDLES.get(key))!.arrayBuffer());
    original[original.length - 1] = (original[original.length - 1] ?? 0) ^ 0xff;
    await env.BUNDLES.put(key, original);
    const user = await signup();
    const res = await install(user.apiKey, { capsule: sub.name, acceptPermissions: ["artifacts.read"] });
    expect(res.status).toBe(502);
    expect((await errorOf(res)).code).toBe("INTEGRITY_CHECK_FAILED");
  });

  it("refuses to install a bundle whose signature no longer matches, even with the right digest", async () => {
    const author = await signup();
    const sub = await publish(author.apiKey, { name: `${author.handle}/resigned` });
    const other = await publish(author.apiKey, { name: `${author.handle}/donor` });
    // A valid platform signature, but over another bundle's bytes, in the version's record.
    await env.DB.prepare(
      "UPDATE capsule_versions SET signature = (SELECT signature FROM capsule_versions WHERE name = ?) WHERE name = ?",
    )
      .bind(other.name, sub.name)
      .run();
    const user = await signup();
    const before = await countRows("installs");
    const res = await install(user.apiKey, { capsule: sub.name, acceptPermissions: ["artifacts.read"] });
    expect(res.status).toBe(502);
    expect((await errorOf(res)).code).toBe("INTEGRITY_CHECK_FAILED");
    expect(await countRows("installs")).toBe(before);
  });

  it("answers 422 for an unknown capsule or an unsatisfiable range", async () => {
    const author = await signup();
    const sub = await publish(author.apiKey, { name: `${author.handle}/only-one` });
    const user = await signup();
    expect((await install(user.apiKey, { capsule: `${author.handle}/missing` })).status).toBe(422);
    const res = await install(user.apiKey, {
      capsule: sub.name,
      range: "^9.0.0",
      acceptPermissions: ["artifacts.read"],
    });
    expect(res.status).toBe(422);
    expect((await errorOf(res)).code).toBe("DEPENDENCY_NOT_FOUND");
  });

  it("validates the body and requires an account", async () => {
    const user = await signup();
    expect((await install(user.apiKey, { capsule: "Not A Name" })).status).toBe(400);
    expect((await install(user.apiKey, { capsule: "a/b", range: "not a range" })).status).toBe(400);
    expect((await install(user.apiKey, { capsule: "a/b", acceptPermissions: ["root"] })).status).toBe(400);
    expect((await install(user.apiKey, { capsule: "a/b", budgetTokens: -1 })).status).toBe(400);
    expect((await api("/v1/installs", { method: "POST", json: { capsule: "a/b" } })).status).toBe(401);
    expect((await install(env.SOMA_ADMIN_TOKEN, { capsule: "a/b" })).status).toBe(403);
  });
});

describe("GET and DELETE /v1/installs", () => {
  it("lists the caller's installs and removes one, leaving others' alone", async () => {
    const author = await signup();
    const sub = await publish(author.apiKey, { name: `${author.handle}/listed` });
    const user = await signup();
    const other = await signup();
    const created = (await (
      await install(user.apiKey, {
        capsule: sub.name,
        acceptPermissions: ["artifacts.read"],
        budgetTokens: 5000,
      })
    ).json()) as InstallBody;
    const list = (await (await api("/v1/installs", { token: user.apiKey })).json()) as {
      items: { id: string; budgetTokens: number }[];
    };
    expect(list.items).toEqual([expect.objectContaining({ id: created.install.id, budgetTokens: 5000 })]);
    expect(
      (await api(`/v1/installs/${created.install.id}`, { method: "DELETE", token: other.apiKey })).status,
    ).toBe(404);
    expect(
      (await api(`/v1/installs/${created.install.id}`, { method: "DELETE", token: user.apiKey })).status,
    ).toBe(204);
    expect(
      (await api(`/v1/installs/${created.install.id}`, { method: "DELETE", token: user.apiKey })).status,
    ).toBe(404);
    const after = (await (await api("/v1/installs", { token: user.apiKey })).json()) as { items: unknown[] };
    expect(after.items).toEqual([]);
    expect((await api("/v1/installs")).status).toBe(401);
    expect((await api("/v1/installs/not-an-id", { method: "DELETE", token: user.apiKey })).status).toBe(400);
  });
});

describe("deprecate and yank", () => {
  async function twoVersions() {
    const author = await signup();
    const name = `${author.handle}/lifecycle`;
    await publish(author.apiKey, { name, version: "1.0.0" });
    await publish(author.apiKey, { name, version: "1.1.0" });
    return { author, name };
  }

  it("installs a deprecated version with a warning", async () => {
    const { author, name } = await twoVersions();
    const res = await api(`/v1/capsules/${name}/versions/1.1.0/deprecate`, {
      method: "POST",
      token: author.apiKey,
      json: { message: "use 2.x" },
    });
    expect(res.status).toBe(200);
    const user = await signup();
    const body = (await (
      await install(user.apiKey, { capsule: name, acceptPermissions: ["artifacts.read"] })
    ).json()) as InstallBody;
    expect(body.install.version).toBe("1.1.0");
    expect(body.warnings).toEqual([`${name}@1.1.0 is deprecated: use 2.x`]);
  });

  it("never resolves a yanked version and keeps its number taken", async () => {
    const { author, name } = await twoVersions();
    const res = await api(`/v1/capsules/${name}/versions/1.1.0/yank`, {
      method: "POST",
      token: author.apiKey,
      json: { reason: "broken" },
    });
    expect(res.status).toBe(200);
    const user = await signup();
    const body = (await (
      await install(user.apiKey, { capsule: name, acceptPermissions: ["artifacts.read"] })
    ).json()) as InstallBody;
    expect(body.install.version).toBe("1.0.0");
    const exact = await install(user.apiKey, {
      capsule: name,
      range: "1.1.0",
      acceptPermissions: ["artifacts.read"],
    });
    expect(exact.status).toBe(422);
    const detail = (await (await api(`/v1/capsules/${name}`)).json()) as {
      capsule: { latestVersion: string };
      versions: { version: string; status: string; yankReason: string | null }[];
    };
    expect(detail.capsule.latestVersion).toBe("1.0.0");
    expect(detail.versions[0]).toMatchObject({ version: "1.1.0", status: "yanked", yankReason: "broken" });
    const { bundle } = await import("../helpers");
    const { upload } = await import("../helpers");
    const reuse = await upload(author.apiKey, await bundle({ name, version: "1.1.0" }));
    expect(reuse.status).toBe(409);
    const again = await api(`/v1/capsules/${name}/versions/1.1.0/yank`, {
      method: "POST",
      token: author.apiKey,
      json: { reason: "x" },
    });
    expect(again.status).toBe(409);
  });

  it("lets only the owner or an admin change versions", async () => {
    const { name } = await twoVersions();
    const stranger = await signup();
    const asStranger = await api(`/v1/capsules/${name}/versions/1.0.0/yank`, {
      method: "POST",
      token: stranger.apiKey,
      json: { reason: "x" },
    });
    expect(asStranger.status).toBe(403);
    const anonymous = await api(`/v1/capsules/${name}/versions/1.0.0/deprecate`, {
      method: "POST",
      json: { message: "x" },
    });
    expect(anonymous.status).toBe(401);
    const asAdmin = await api(`/v1/capsules/${name}/versions/1.0.0/deprecate`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: { message: "old" },
    });
    expect(asAdmin.status).toBe(200);
    const empty = await api(`/v1/capsules/${name}/versions/1.0.0/deprecate`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: {},
    });
    expect(empty.status).toBe(400);
    const missing = await api(`/v1/capsules/${name}/versions/9.9.9/yank`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: { reason: "x" },
    });
    expect(missing.status).toBe(404);
  });
});
