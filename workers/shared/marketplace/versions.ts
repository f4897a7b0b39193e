import semver from "semver";

/** Version statuses: published and deprecated versions resolve; yanked ones never do for new installs. */
export type VersionStatus = "published" | "deprecated" | "yanked";

/** Highest version for the catalog's "latest": stable releases first, prereleases only if nothing else. */
export function pickLatest(versions: { version: string; status: string }[]): string | null {
  const live = versions.filter((v) => v.status !== "yanked").map((v) => v.version);
  const stable = live.filter((v) => semver.prerelease(v) === null);
  const pool = stable.length > 0 ? stable : live;
  return pool.length > 0 ? (semver.rsort([...pool])[0] ?? null) : null;
}
