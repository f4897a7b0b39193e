import { beforeAll, describe, expect, it } from "vitest";
import { api, publish, signup } from "../helpers";

interface Page {
  items: { name: string; category: string; tags: string[]; latestVersion: string; installCount: number }[];
  nextCursor: string | null;
}

async function search(query: string): Promise<Page> {
  const res = await api(`/v1/capsules?${query}`);
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Page;
}

describe("GET /v1/capsules", () => {
  let ns = "";
  beforeAll(async () => {
    const author = await signup();
    ns = author.handle;
    const csvCleaner = {
      name: `${ns}/csv-cleaner`,
      category: "Data",
      tags: ["csv", "etl"],
      description: "Cleans messy CSV spreadsheets: trims, dedupes and normalises columns.",
    };
    await publish(author.apiKey, csvCleaner);
    await publish(author.apiKey, {
      name: `${ns}/python-calculator`,
      category: "Code",
      tags: ["python", "cli"],
      description: "Generates a command-line calculator package in Python.",
    });
    await publish(author.apiKey, {
      name: `${ns}/markdown-docs`,
      category: "Documentation",
      tags: ["markdown"],
      description: "Writes README files and API documentation in Markdown.",
    });
    await publish(author.apiKey, { ...csvCleaner, version: "1.1.0" });
  });

  it("finds a capsule by a misspelled word", async () => {
    const page = await search("q=calculater");
    expect(page.items[0]?.name).toBe(`${ns}/python-calculator`);
    const page2 = await search("q=spredsheet");
    expect(page2.items.map((i) => i.name)).toContain(`${ns}/csv-cleaner`);
  });

  it("matches substrings of names and ranks name matches first", async () => {
    const page = await search("q=markdown");
    expect(page.items[0]?.name).toBe(`${ns}/markdown-docs`);
  });

  it("returns nothing for a query that matches nothing", async () => {
    expect((await search("q=zzzqqqxxx")).items).toEqual([]);
  });

  it("filters by category and tag", async () => {
    const byCategory = await search("category=Data");
    expect(byCategory.items.map((i) => i.name)).toEqual([`${ns}/csv-cleaner`]);
    const byTag = await search("tag=python");
    expect(byTag.items.map((i) => i.name)).toEqual([`${ns}/python-calculator`]);
    const combined = await search("q=csv&category=Code");
    expect(combined.items).toEqual([]);
  });

  it("shows the latest version in listings", async () => {
    const page = await search("category=Data");
    expect(page.items[0]?.latestVersion).toBe("1.1.0");
  });

  it("sorts by name and pages with a cursor", async () => {
    const first = await search("sort=name&limit=2");
    expect(first.items.map((i) => i.name)).toEqual([`${ns}/csv-cleaner`, `${ns}/markdown-docs`]);
    expect(first.nextCursor).not.toBeNull();
    const second = await search(`sort=name&limit=2&cursor=${first.nextCursor}`);
    expect(second.items.map((i) => i.name)).toEqual([`${ns}/python-calculator`]);
    expect(second.nextCursor).toBeNull();
  });

  it("sorts by installs for popular and by last update for recent", async () => {
    const install = async (capsule: string) => {
      const user = await signup();
      const res = await api("/v1/installs", {
        method: "POST",
        token: user.apiKey,
        json: { capsule, acceptPermissions: ["artifacts.read"] },
      });
      expect(res.status, await res.clone().text()).toBe(201);
    };
    await install(`${ns}/markdown-docs`);
    await install(`${ns}/markdown-docs`);
    await install(`${ns}/python-calculator`);
    const popular = await search("sort=popular");
    expect(popular.items.map((i) => [i.name, i.installCount])).toEqual([
      [`${ns}/markdown-docs`, 2],
      [`${ns}/python-calculator`, 1],
      [`${ns}/csv-cleaner`, 0],
    ]);
    // csv-cleaner gained 1.1.0 after the others were published.
    const recent = await search("sort=recent");
    expect(recent.items.map((i) => i.name)).toEqual([
      `${ns}/csv-cleaner`,
      `${ns}/markdown-docs`,
      `${ns}/python-calculator`,
    ]);
  });

  it("pages one ranking across page sizes and shows a capsule published after a search at once", async () => {
    const author = await signup();
    const word = `zq${author.handle.replace(/[^a-z0-9]/g, "").slice(-8)}`;
    for (const n of [1, 2, 3]) {
      await publish(author.apiKey, {
        name: `${author.handle}/probe-${n}`,
        description: `Probe ${word} number ${n} for ranking reuse.`,
      });
    }
    const all = await search(`q=${word}&limit=10`);
    expect(all.items).toHaveLength(3);
    const first = await search(`q=${word}&limit=2`);
    const second = await search(`q=${word}&limit=2&cursor=${first.nextCursor}`);
    expect([...first.items, ...second.items].map((i) => i.name)).toEqual(all.items.map((i) => i.name));
    // Within the ranking's reuse window: the publish itself makes the next search see the new capsule.
    await publish(author.apiKey, {
      name: `${author.handle}/probe-4`,
      description: `Probe ${word} number 4 for ranking reuse.`,
    });
    const after = await search(`q=${word}&limit=11`);
    expect(after.items.map((i) => i.name)).toContain(`${author.handle}/probe-4`);
    expect(after.items).toHaveLength(4);
  });

  it.each(["limit=0", "limit=1000", "sort=random", "category=Nope", "cursor=%%%", "unknown=1"])(
    "rejects the query %s with 400",
    async (query) => {
      const res = await api(`/v1/capsules?${query}`);
      expect(res.status).toBe(400);
    },
  );
});

describe("GET /v1/capsules/:ns/:name", () => {
  it("returns the latest manifest, every version and the counts", async () => {
    const author = await signup();
    await publish(author.apiKey, { name: `${author.handle}/multi`, version: "1.0.0" });
    await publish(author.apiKey, { name: `${author.handle}/multi`, version: "1.2.0" });
    await publish(author.apiKey, { name: `${author.handle}/multi`, version: "2.0.0-beta.1" });
    const res = await api(`/v1/capsules/${author.handle}/multi`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      capsule: { latestVersion: string; installCount: number; executionCount: number };
      manifest: { metadata: { version: string } };
      versions: { version: string; status: string }[];
    };
    expect(body.capsule.latestVersion).toBe("1.2.0");
    expect(body.manifest.metadata.version).toBe("1.2.0");
    expect(body.versions.map((v) => v.version)).toEqual(["2.0.0-beta.1", "1.2.0", "1.0.0"]);
    expect(body.capsule).toMatchObject({ installCount: 0, executionCount: 0 });
  });

  it("answers 404 for an unknown capsule and 400 for a malformed name", async () => {
    expect((await api("/v1/capsules/nobody/nothing")).status).toBe(404);
    expect((await api("/v1/capsules/Bad%20Name/x")).status).toBe(400);
  });
});
