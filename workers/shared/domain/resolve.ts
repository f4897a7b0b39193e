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

/** Upper bound on search steps; a registry that needs more is reported as a conflict, not searched forever. */
const MAX_STEPS = 20_000;

/**
 * Resolves a capsule and its transitive dependencies to exactly one version per name: the highest versions
 * (non-yanked) that satisfy every range required by the versions actually chosen. It searches newest-first and
 * backtracks when a later range rules out an earlier pick, so constraints from versions that end up unchosen
 * never count. Versions are loaded a level at a time (one source call per level). Failures name the culprit:
 * DEPENDENCY_NOT_FOUND, DEPENDENCY_CONFLICT (with the requirers) or DEPENDENCY_CYCLE (with the cycle).
 */
export async function resolveDependencies(
  rootName: string,
  rootRange: string,
  source: VersionSource,
): Promise<Resolution> {
  const known = new Map<string, VersionCandidate[]>();
  let frontier = [rootName];
  while (frontier.length > 0) {
    const missing = [...new Set(frontier)].filter((n) => !known.has(n));
    if (missing.length === 0) break;
    const found = await source(missing);
    frontier = [];
    for (const name of missing) {
      const versions = found.get(name) ?? [];
      known.set(name, versions);
      for (const v of versions) if (v.status !== "yanked") frontier.push(...Object.keys(v.dependencies));
    }
  }

  const chosen = new Map<string, VersionCandidate>();
  const required = new Map<string, Requirement[]>();
  let firstFailure: AppError | null = null;
  let steps = 0;

  const fail = (name: string, requirements: Requirement[]): false => {
    firstFailure ??= explain(name, requirements, known.get(name) ?? []);
    return false;
  };

  const solve = (pending: Requirement[], index: number): boolean => {
    steps += 1;
    if (steps > MAX_STEPS) {
      throw new AppError(
        "DEPENDENCY_CONFLICT",
        `The dependencies of ${rootName} are too entangled to resolve`,
        {
          name: rootName,
          requirements: [],
        },
      );
    }
    const requirement = pending[index];
    if (!requirement) return true;
    const before = required.get(requirement.name) ?? [];
    const requirements = [...before, requirement];
    required.set(requirement.name, requirements);
    const current = chosen.get(requirement.name);
    let solved: boolean;
    if (current) {
      solved = semver.satisfies(current.version, requirement.range)
        ? solve(pending, index + 1)
        : fail(requirement.name, requirements);
    } else {
      const candidates = (known.get(requirement.name) ?? [])
        .filter(
          (v) => v.status !== "yanked" && requirements.every((r) => semver.satisfies(v.version, r.range)),
        )
        .sort((a, b) => semver.rcompare(a.version, b.version));
      solved = candidates.length === 0 ? fail(requirement.name, requirements) : false;
      for (const candidate of candidates) {
        chosen.set(requirement.name, candidate);
        const deps = Object.entries(candidate.dependencies).map(([name, range]) => ({
          name,
          range,
          from: `${candidate.name}@${candidate.version}`,
        }));
        if (solve([...pending, ...deps], index + 1)) {
          solved = true;
          break;
        }
        chosen.delete(requirement.name);
      }
    }
    if (!solved) required.set(requirement.name, before);
    return solved;
  };

  if (!solve([{ name: rootName, range: rootRange, from: "install request" }], 0)) {
    throw firstFailure ?? new AppError("DEPENDENCY_CONFLICT", `Could not resolve ${rootName}@${rootRange}`);
  }
  return finish(rootName, chosen);
}

/** Why no version of `name` fits: nothing published, one range unsatisfiable, or ranges that exclude each other. */
function explain(name: string, requirements: Requirement[], versions: VersionCandidate[]): AppError {
  const live = versions.filter((v) => v.status !== "yanked");
  const unmet = requirements.find((r) => !live.some((v) => semver.satisfies(v.version, r.range)));
  if (unmet || requirements.length < 2) {
    const culprit = unmet ?? requirements[0]!;
    return new AppError(
      "DEPENDENCY_NOT_FOUND",
      versions.length === 0
        ? `${name} is not published (required by ${culprit.from})`
        : `No installable version of ${name} satisfies ${culprit.range} (required by ${culprit.from})`,
      { name, range: culprit.range, requiredBy: culprit.from, available: live.map((v) => v.version) },
    );
  }
  return new AppError(
    "DEPENDENCY_CONFLICT",
    `No single version of ${name} satisfies ${requirements.map((r) => `${r.range} (from ${r.from})`).join(" and ")}`,
    { name, requirements },
  );
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
