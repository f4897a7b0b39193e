import semver from "semver";
import { describe, expect, it } from "vitest";
import {
  type Resolution,
  resolveDependencies,
  type VersionCandidate,
  type VersionSource,
} from "../../workers/shared/domain/resolve";
import { AppError } from "../../workers/shared/errors";

type Status = VersionCandidate["status"];

function v(
  name: string,
  version: string,
  dependencies: Record<string, string> = {},
  status: Status = "published",
  deprecationMessage: string | null = null,
): VersionCandidate {
  return { name, version, dependencies, status, deprecationMessage };
}

/** An in-memory registry that records each batch the resolver asks for. */
function registry(versions: VersionCandidate[]): { source: VersionSource; calls: string[][] } {
  const calls: string[][] = [];
  const source: VersionSource = async (names) => {
    calls.push([...names]);
    const found = new Map<string, VersionCandidate[]>();
    for (const name of names) {
      const list = versions.filter((c) => c.name === name);
      if (list.length > 0) found.set(name, list);
    }
    return found;
  };
  return { source, calls };
}

async function failure(promise: Promise<Resolution>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  return expect.fail("resolveDependencies succeeded where it should fail");
}

function versionsOf(resolution: Resolution): Record<string, string> {
  return Object.fromEntries(resolution.packages.map((p) => [p.name, p.version]));
}

/** Every package's dependencies are met by the versions chosen, and each name appears once. */
function expectConsistent(resolution: Resolution): void {
  const names = resolution.packages.map((p) => p.name);
  expect(new Set(names).size).toBe(names.length);
  const chosen = versionsOf(resolution);
  for (const pkg of resolution.packages) {
    expect(Object.keys(pkg.resolvedDependencies).sort()).toEqual(Object.keys(pkg.dependencies).sort());
    for (const [dep, range] of Object.entries(pkg.dependencies)) {
      expect(pkg.resolvedDependencies[dep]).toBe(chosen[dep]);
      expect(semver.satisfies(chosen[dep] ?? "", range)).toBe(true);
    }
  }
}

describe("resolveDependencies: choosing versions", () => {
  it("picks the highest version satisfying the range", async () => {
    const { source } = registry([
      v("acme/a", "1.0.0"),
      v("acme/a", "1.4.2"),
      v("acme/a", "1.10.0"),
      v("acme/a", "2.0.0"),
    ]);
    const result = await resolveDependencies("acme/a", "^1.0.0", source);
    expect(result.root.version).toBe("1.10.0");
    expect(result.packages).toHaveLength(1);
    expect(result.warnings).toEqual([]);
  });

  it("does not pick a prerelease for a plain range", async () => {
    const { source } = registry([v("acme/a", "1.2.0"), v("acme/a", "1.3.0-beta.1")]);
    const result = await resolveDependencies("acme/a", "^1.0.0", source);
    expect(result.root.version).toBe("1.2.0");
  });

  it("skips yanked versions even when they are the highest match", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/lib": "^1.0.0" }),
      v("acme/lib", "1.0.0"),
      v("acme/lib", "1.1.0", {}, "yanked"),
    ]);
    const result = await resolveDependencies("acme/root", "1.0.0", source);
    expect(versionsOf(result)["acme/lib"]).toBe("1.0.0");
    expect(result.root.resolvedDependencies).toEqual({ "acme/lib": "1.0.0" });
  });

  it("chooses a deprecated version when it is the best match and warns about it", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/old": "^2.0.0" }),
      v("acme/old", "2.0.0", {}, "deprecated", "use acme/new instead"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(versionsOf(result)["acme/old"]).toBe("2.0.0");
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toContain("acme/old@2.0.0");
    expect(result.warnings[0]).toContain("use acme/new instead");
  });

  it("warns about a deprecated version without a message", async () => {
    const { source } = registry([v("acme/old", "1.0.0", {}, "deprecated", null)]);
    const result = await resolveDependencies("acme/old", "^1.0.0", source);
    expect(result.warnings).toEqual(["acme/old@1.0.0 is deprecated"]);
  });

  it("resolves a four-level tree with one version per name", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^2.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/a", "1.1.0", { "acme/c": "^1.2.0" }),
      v("acme/b", "2.3.0", { "acme/c": ">=1.1.0", "acme/d": "~3.1.0" }),
      v("acme/c", "1.1.0"),
      v("acme/c", "1.2.4", { "acme/e": "*" }),
      v("acme/d", "3.1.9", { "acme/e": "^0.2.0" }),
      v("acme/d", "3.2.0"),
      v("acme/e", "0.2.1"),
      v("acme/e", "0.3.0"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(versionsOf(result)).toEqual({
      "acme/root": "1.0.0",
      "acme/a": "1.1.0",
      "acme/b": "2.3.0",
      "acme/c": "1.2.4",
      "acme/d": "3.1.9",
      "acme/e": "0.2.1",
    });
    expect(result.root.name).toBe("acme/root");
    expect(result.root.resolvedDependencies).toEqual({ "acme/a": "1.1.0", "acme/b": "2.3.0" });
    expectConsistent(result);
  });

  it("resolves a 40-package tree with shared dependencies", async () => {
    const name = (i: number) => `acme/p${i}`;
    const versions: VersionCandidate[] = [];
    for (let i = 0; i < 40; i++) {
      const deps: Record<string, string> = {};
      // A binary tree plus a shared leaf, so many names are reached more than once.
      for (const child of [2 * i + 1, 2 * i + 2]) if (child < 40) deps[name(child)] = "^1.0.0";
      if (i > 0 && i !== 39) deps[name(39)] = i % 2 === 0 ? "^1.1.0" : ">=1.0.0";
      versions.push(v(name(i), "1.0.0", deps), v(name(i), "1.1.0", deps), v(name(i), "2.0.0", deps));
    }
    const { source, calls } = registry(versions);
    const result = await resolveDependencies(name(0), "^1.0.0", source);
    expect(result.packages).toHaveLength(40);
    for (const pkg of result.packages) expect(pkg.version).toBe("1.1.0");
    expectConsistent(result);
    // Depth of a 40-node binary tree is 6 levels; each level is one batch.
    expect(calls).toHaveLength(6);
    expect(calls.flat().sort()).toEqual(Array.from({ length: 40 }, (_, i) => name(i)).sort());
  });
});

describe("resolveDependencies: batching", () => {
  it("asks the source once per breadth-first level with every new name of that level", async () => {
    const { source, calls } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "^1.0.0", "acme/d": "^1.0.0", "acme/a": "^1.0.0" }),
      v("acme/c", "1.0.0", { "acme/e": "^1.0.0" }),
      v("acme/d", "1.0.0"),
      v("acme/e", "1.0.0"),
    ]);
    await resolveDependencies("acme/root", "^1.0.0", source);
    expect(calls.map((names) => [...names].sort())).toEqual([
      ["acme/root"],
      ["acme/a", "acme/b"],
      ["acme/c", "acme/d"],
      ["acme/e"],
    ]);
  });

  it("does not reload names when a conflict restarts the pass", async () => {
    const { source, calls } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "~1.1.0" }),
      v("acme/c", "1.1.5"),
      v("acme/c", "1.2.0"),
    ]);
    await resolveDependencies("acme/root", "^1.0.0", source);
    expect(calls).toHaveLength(3);
  });
});

describe("resolveDependencies: conflicts", () => {
  it("restarts when a later range rules out the first pick and finds a version satisfying both", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "~1.1.0" }),
      v("acme/c", "1.1.5"),
      v("acme/c", "1.2.0"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(versionsOf(result)["acme/c"]).toBe("1.1.5");
    expect(result.packages.find((p) => p.name === "acme/a")?.resolvedDependencies).toEqual({
      "acme/c": "1.1.5",
    });
    expectConsistent(result);
  });

  it("settles a constraint found at a deeper level than the first pick", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/c": "^1.0.0", "acme/a": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/b": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "<1.5.0" }),
      v("acme/c", "1.4.0"),
      v("acme/c", "1.9.0"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(versionsOf(result)["acme/c"]).toBe("1.4.0");
    expectConsistent(result);
  });

  it("fails with DEPENDENCY_CONFLICT naming both requirers when no version satisfies both ranges", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "^2.0.0" }),
      v("acme/c", "1.3.0"),
      v("acme/c", "2.1.0"),
    ]);
    const error = await failure(resolveDependencies("acme/root", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_CONFLICT");
    expect(error.message).toContain("acme/c");
    expect(error.message).toContain("acme/a@1.0.0");
    expect(error.message).toContain("acme/b@1.0.0");
    const details = error.details as { name: string; requirements: { range: string; from: string }[] };
    expect(details.name).toBe("acme/c");
    expect(details.requirements).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ range: "^1.0.0", from: "acme/a@1.0.0" }),
        expect.objectContaining({ range: "^2.0.0", from: "acme/b@1.0.0" }),
      ]),
    );
  });

  // Constraints survive restarts even when the version that added them is no longer chosen: here
  // acme/a@1.1.0 pins acme/c to ^2 in the first pass, acme/y later forces acme/a down to 1.0.0 (which wants
  // acme/c ^1), and the stale ^2 from acme/a@1.1.0 makes the resolver report a conflict although
  // root 1.0.0, a 1.0.0, x 1.0.0, y 1.0.0, c 1.0.0 satisfies every range in the graph.
  it("drops constraints added by a version that a restart no longer chooses", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/x": "^1.0.0", "acme/y": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/a", "1.1.0", { "acme/c": "^2.0.0" }),
      v("acme/x", "1.0.0", { "acme/c": ">=1.0.0 <=2.0.0" }),
      v("acme/y", "1.0.0", { "acme/a": "~1.0.0" }),
      v("acme/c", "1.0.0"),
      v("acme/c", "2.0.0"),
      v("acme/c", "2.1.0"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(versionsOf(result)).toMatchObject({ "acme/a": "1.0.0", "acme/c": "1.0.0" });
  });

  it("fails with DEPENDENCY_NOT_FOUND when a dependency is not published", async () => {
    const { source } = registry([v("acme/root", "1.0.0", { "acme/ghost": "^1.0.0" })]);
    const error = await failure(resolveDependencies("acme/root", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_NOT_FOUND");
    expect(error.message).toContain("acme/ghost");
    expect(error.message).toContain("acme/root@1.0.0");
    expect(error.details).toMatchObject({
      name: "acme/ghost",
      range: "^1.0.0",
      requiredBy: "acme/root@1.0.0",
    });
  });

  it("fails with DEPENDENCY_NOT_FOUND when the root itself is not published", async () => {
    const { source } = registry([]);
    const error = await failure(resolveDependencies("acme/nothing", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_NOT_FOUND");
    expect(error.details).toMatchObject({ name: "acme/nothing", requiredBy: "install request" });
  });

  it("fails with DEPENDENCY_NOT_FOUND listing what exists when no version satisfies a range", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/lib": "^3.0.0" }),
      v("acme/lib", "1.0.0"),
      v("acme/lib", "2.0.0"),
    ]);
    const error = await failure(resolveDependencies("acme/root", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_NOT_FOUND");
    expect(error.details).toMatchObject({ name: "acme/lib", range: "^3.0.0", available: ["1.0.0", "2.0.0"] });
  });

  it("fails with DEPENDENCY_NOT_FOUND when every matching version is yanked", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/lib": "^1.0.0" }),
      v("acme/lib", "1.0.0", {}, "yanked"),
      v("acme/lib", "1.1.0", {}, "yanked"),
    ]);
    const error = await failure(resolveDependencies("acme/root", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_NOT_FOUND");
    expect(error.details).toMatchObject({ name: "acme/lib", available: [] });
  });
});

describe("resolveDependencies: cycles", () => {
  it("fails with DEPENDENCY_CYCLE naming the versions of A -> B -> C -> A in order", async () => {
    const { source } = registry([
      v("acme/a", "1.0.0", { "acme/b": "^1.0.0" }),
      v("acme/b", "1.2.0", { "acme/c": "^1.0.0" }),
      v("acme/c", "1.0.3", { "acme/a": "^1.0.0" }),
    ]);
    const error = await failure(resolveDependencies("acme/a", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_CYCLE");
    expect(error.details).toEqual({
      cycle: ["acme/a@1.0.0", "acme/b@1.2.0", "acme/c@1.0.3", "acme/a@1.0.0"],
    });
    expect(error.message).toContain("acme/a@1.0.0 -> acme/b@1.2.0 -> acme/c@1.0.3 -> acme/a@1.0.0");
  });

  it("finds a cycle that does not pass through the root", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/b": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/a": "^1.0.0" }),
    ]);
    const error = await failure(resolveDependencies("acme/root", "^1.0.0", source));
    expect(error.code).toBe("DEPENDENCY_CYCLE");
    expect(error.details).toEqual({ cycle: ["acme/a@1.0.0", "acme/b@1.0.0", "acme/a@1.0.0"] });
  });

  it("does not mistake a diamond for a cycle", async () => {
    const { source } = registry([
      v("acme/root", "1.0.0", { "acme/a": "^1.0.0", "acme/b": "^1.0.0" }),
      v("acme/a", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/b", "1.0.0", { "acme/c": "^1.0.0" }),
      v("acme/c", "1.0.0"),
    ]);
    const result = await resolveDependencies("acme/root", "^1.0.0", source);
    expect(result.packages).toHaveLength(4);
    expectConsistent(result);
  });
});
