import semver from "semver";
import { AppError } from "../errors";

/** What the resolver needs to know about one published version. */
export interface VersionCandidate {
  name: string;
  version: string;
  status: "published" | "deprecated" | "yanked";
  dependencies: Record<string, string>;
  deprecationMessage: string | null;
}

export interface ResolvedPackage extends VersionCandidate {
  /** Dependency name -> the version chosen for it. */
  resolvedDependencies: Record<string, string>;
}

export interface Resolution {
  root: ResolvedPackage;
  packages: ResolvedPackage[];
  warnings: string[];
}

/** Loads every version of the named capsules (the resolver batches names per level). */
export type VersionSource = (names: string[]) => Promise<Map<string, VersionCandidate[]>>;

interface Requirement {
  name: string;
  range: string;
  from: string;
}

const MAX_PASSES = 25;

/**
 * Resolves a capsule and its transitive dependencies: the highest non-yanked version satisfying every range
 * seen for a name, exactly one version per name. When a later range rules out an earlier pick, the pass
 * restarts with both ranges as constraints; if no version satisfies them all, DEPENDENCY_CONFLICT names the
 * requirers. Cycles in the result fail with DEPENDENCY_CYCLE naming the cycle.
 */
export async function resolveDependencies(
  rootName: string,
  rootRange: string,
  source: VersionSource,
): Promise<Resolution> {
  const known = new Map<string, VersionCandidate[]>();
  const constraints = new Map<string, Requirement[]>();

  const load = async (names: string[]) => {
    const missing = [...new Set(names)].filter((n) => !known.has(n));
    if (missing.length === 0) return;
    const found = await source(missing);
    for (const name of missing) known.set(name, found.get(name) ?? []);
  };

  const pick = (name: string, requirements: Requirement[]): VersionCandidate => {
    const versions = known.get(name) ?? [];
    const live = versions.filter((v) => v.status !== "yanked");
    const satisfying = live.filter((v) => requirements.every((r) => semver.satisfies(v.version, r.range)));
    if (satisfying.length === 0) {
      if (
        requirements.length > 1 &&
        requirements.every((r) => live.some((v) => semver.satisfies(v.version, r.range)))
      ) {
        throw new AppError(
          "DEPENDENCY_CONFLICT",
          `No single version of ${name} satisfies ${requirements.map((r) => `${r.range} (from ${r.from})`).join(" and ")}`,
          { name, requirements },
        );
      }
      const unmet =
        requirements.find((r) => !live.some((v) => semver.satisfies(v.version, r.range))) ?? requirements[0]!;
      throw new AppError(
        "DEPENDENCY_NOT_FOUND",
        versions.length === 0
          ? `${name} is not published (required by ${unmet.from})`
          : `No installable version of ${name} satisfies ${unmet.range} (required by ${unmet.from})`,
        { name, range: unmet.range, requiredBy: unmet.from, available: live.map((v) => v.version) },
      );
    }
    return satisfying.reduce((best, v) => (semver.gt(v.version, best.version) ? v : best));
  };

  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const chosen = new Map<string, VersionCandidate>();
    const seen = new Map<string, Requirement[]>();
    let restart = false;
    let level: Requirement[] = [{ name: rootName, range: rootRange, from: "install request" }];
    while (level.length > 0 && !restart) {
      await load(level.map((r) => r.name));
      const next: Requirement[] = [];
      for (const requirement of level) {
        const list = seen.get(requirement.name) ?? [];
        list.push(requirement);
        seen.set(requirement.name, list);
        const current = chosen.get(requirement.name);
        if (current) {
          if (semver.satisfies(current.version, requirement.range)) continue;
          // The earlier pick is ruled out: remember every range for this name and start over.
          constraints.set(requirement.name, dedupe([...(constraints.get(requirement.name) ?? []), ...list]));
          pick(requirement.name, constraints.get(requirement.name)!);
          restart = true;
          break;
        }
        const selected = pick(
          requirement.name,
          dedupe([...(constraints.get(requirement.name) ?? []), requirement]),
        );
        chosen.set(requirement.name, selected);
        for (const [dep, range] of Object.entries(selected.dependencies)) {
          next.push({ name: dep, range, from: `${selected.name}@${selected.version}` });
        }
      }
      level = next;
    }
    if (restart) continue;
    return finish(rootName, chosen);
  }
  throw new AppError(
    "DEPENDENCY_CONFLICT",
    `Could not settle the dependencies of ${rootName} after ${MAX_PASSES} passes`,
  );
}

function dedupe(list: Requirement[]): Requirement[] {
  const keyed = new Map(list.map((r) => [`${r.range}|${r.from}`, r]));
  return [...keyed.values()];
}

function finish(rootName: string, chosen: Map<string, VersionCandidate>): Resolution {
  const resolved = new Map<string, ResolvedPackage>();
  for (const [name, candidate] of chosen) {
    const resolvedDependencies: Record<string, string> = {};
    for (const dep of Object.keys(candidate.dependencies))
      resolvedDependencies[dep] = chosen.get(dep)!.version;
    resolved.set(name, { ...candidate, resolvedDependencies });
  }
  const cycle = findCycle(rootName, resolved);
  if (cycle) {
    throw new AppError("DEPENDENCY_CYCLE", `Dependency cycle: ${cycle.join(" -> ")}`, { cycle });
  }
  const warnings = [...resolved.values()]
    .filter((p) => p.status === "deprecated")
    .map(
      (p) => `${p.name}@${p.version} is deprecated${p.deprecationMessage ? `: ${p.deprecationMessage}` : ""}`,
    );
  return { root: resolved.get(rootName)!, packages: [...resolved.values()], warnings };
}

function findCycle(rootName: string, packages: Map<string, ResolvedPackage>): string[] | null {
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const label = (name: string) => `${name}@${packages.get(name)!.version}`;
  const visit = (name: string): string[] | null => {
    if (state.get(name) === "done") return null;
    if (state.get(name) === "visiting") {
      return [...stack.slice(stack.indexOf(name)), name].map(label);
    }
    state.set(name, "visiting");
    stack.push(name);
    for (const dep of Object.keys(packages.get(name)!.resolvedDependencies)) {
      const cycle = visit(dep);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(name, "done");
    return null;
  };
  return visit(rootName);
}
