import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ApiClient } from "../api.ts";
import { integerOption, listOption, stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { requireToken, resolveConnection } from "../config.ts";
import { ApiError, CliError, UsageError } from "../errors.ts";
import { parseInstallRef } from "../lib/capsule-ref.ts";
import { emit } from "../output.ts";

export interface LockedPackage {
  name: string;
  version: string;
  sha256: string;
  keyid: string;
  bundleUrl: string;
  dependencies: Record<string, string>;
}

export interface InstallResponse {
  install: {
    id: string;
    capsule: string;
    version?: string;
    permissions?: string[];
    lock?: { packages: LockedPackage[] };
  };
  lock?: { packages: LockedPackage[] };
  warnings?: string[];
}

function missingPermissions(error: unknown): string[] | null {
  if (!(error instanceof ApiError) || error.code !== "PERMISSIONS_NOT_ACCEPTED") return null;
  const details = error.details as { missing?: unknown } | undefined;
  return Array.isArray(details?.missing)
    ? details.missing.filter((p): p is string => typeof p === "string")
    : [];
}

/**
 * Draws the resolved dependency tree from the lock, starting at the root capsule. A package reached twice is
 * drawn once and then marked "(see above)".
 */
export function renderTree(root: string, packages: LockedPackage[]): string[] {
  const byName = new Map(packages.map((p) => [p.name, p]));
  const lines: string[] = [];
  const drawn = new Set<string>();
  const label = (p: LockedPackage) => `${p.name}@${p.version}  sha256:${p.sha256.slice(0, 12)}`;
  function walk(name: string, prefix: string, isLast: boolean, isRoot: boolean): void {
    const pkg = byName.get(name);
    const branch = isRoot ? "" : isLast ? "└── " : "├── ";
    if (!pkg) {
      lines.push(`${prefix}${branch}${name} (missing from the lock)`);
      return;
    }
    if (drawn.has(name)) {
      lines.push(`${prefix}${branch}${pkg.name}@${pkg.version} (see above)`);
      return;
    }
    drawn.add(name);
    lines.push(`${prefix}${branch}${label(pkg)}`);
    const children = Object.keys(pkg.dependencies).sort();
    const childPrefix = isRoot ? "" : `${prefix}${isLast ? "    " : "│   "}`;
    children.forEach((child, i) => {
      walk(child, childPrefix, i === children.length - 1, false);
    });
  }
  walk(root, "", true, true);
  for (const pkg of packages)
    if (!drawn.has(pkg.name)) lines.push(`${label(pkg)} (not reachable from ${root})`);
  return lines;
}

/** `soma install`: resolves a capsule and its dependencies on the platform and records the install. */
export const installCommand: Command = {
  name: "install",
  summary: "Install a capsule (resolve, accept permissions, lock)",
  help: `Usage: soma install <handle>/<name>[@<range>] [--accept-permissions p1,p2 | --yes] [--budget N]
                    [--lock soma.lock.json]

Resolves the capsule and its dependencies (POST /v1/installs), checks every bundle's digest and signature on
the platform, and records the install. Capsules that need permissions are installed only once you accept
them: list them with --accept-permissions, or pass --yes to accept whatever the resolved tree asks for.

Options:
  --accept-permissions <list>  Comma-separated permissions to grant, e.g. artifacts.read,llm
  -y, --yes                    Accept exactly the permissions the resolved tree needs
  --budget <tokens>            Token budget for this install
  --lock <file>                Write the lock (resolved packages with sha256 and key ids) to <file>

${COMMON_HELP}`,
  options: {
    "accept-permissions": { type: "string" },
    yes: { type: "boolean", short: "y", default: false },
    budget: { type: "string" },
    lock: { type: "string" },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, env, cwd }) {
    const { name, range } = parseInstallRef(positionals[0] ?? "");
    const accepted = listOption(values, "accept-permissions");
    if (values.yes === true && stringOption(values, "accept-permissions") !== undefined) {
      throw new UsageError("Pass either --accept-permissions or --yes, not both");
    }
    const budgetTokens = integerOption(values, "budget");
    const connection = await resolveConnection(values, env);
    requireToken(connection);
    const client = new ApiClient(connection);
    const request = (acceptPermissions: string[]) =>
      client.json<InstallResponse>("POST", "/v1/installs", {
        json: {
          capsule: name,
          range,
          acceptPermissions,
          ...(budgetTokens !== undefined ? { budgetTokens } : {}),
        },
      });

    let response: InstallResponse;
    let granted = accepted;
    try {
      response = await request(accepted);
    } catch (error) {
      const missing = missingPermissions(error);
      if (missing === null) throw error;
      if (values.yes !== true) {
        throw new CliError(
          `${name} needs permissions you have not accepted: ${missing.join(", ")}\n` +
            `Re-run with --accept-permissions ${[...accepted, ...missing].join(",")} (or --yes to accept them all).`,
          { code: "PERMISSIONS_NOT_ACCEPTED", details: (error as ApiError).details },
        );
      }
      granted = missing;
      response = await request(missing);
    }

    const packages = response.lock?.packages ?? response.install.lock?.packages ?? [];
    const lockPath = stringOption(values, "lock");
    if (lockPath) {
      await writeFile(resolve(cwd, lockPath), `${JSON.stringify({ packages }, null, 2)}\n`);
    }
    const warnings = response.warnings ?? [];
    emit(io, values.json === true, { ...response, lock: { packages } }, () => [
      `Installed ${name}@${response.install.version ?? packages.find((p) => p.name === name)?.version ?? "?"} (${response.install.id})`,
      ...(granted.length > 0 ? [`Permissions granted: ${granted.join(", ")}`] : []),
      "",
      ...renderTree(name, packages),
      ...(warnings.length > 0 ? ["", ...warnings.map((w) => `warning: ${w}`)] : []),
      ...(lockPath ? ["", `Lock written to ${resolve(cwd, lockPath)}`] : []),
    ]);
    return 0;
  },
};
