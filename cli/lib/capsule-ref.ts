import semver from "semver";
import { UsageError } from "../errors.ts";
import { CAPSULE_NAME_PATTERN } from "./manifest.ts";

/** Splits `ns/name@spec` at the last '@' (names never contain one); `spec` is undefined when absent. */
export function splitCapsuleRef(ref: string): { name: string; spec: string | undefined } {
  const at = ref.lastIndexOf("@");
  const name = at > 0 ? ref.slice(0, at) : ref;
  const spec = at > 0 ? ref.slice(at + 1) : undefined;
  if (!CAPSULE_NAME_PATTERN.test(name)) {
    throw new UsageError(`"${name}" is not a capsule name: expected <handle>/<name>, e.g. acme/csv-cleaner`);
  }
  return { name, spec };
}

/** Parses `ns/name[@range]`; the range defaults to "*". */
export function parseInstallRef(ref: string): { name: string; range: string } {
  const { name, spec } = splitCapsuleRef(ref);
  const range = spec === undefined || spec === "" ? "*" : spec;
  if (semver.validRange(range) === null) throw new UsageError(`"${range}" is not a semver range`);
  return { name, range };
}

/** Parses `ns/name@version` with an exact version. */
export function parseExactRef(ref: string): { name: string; version: string } {
  const { name, spec } = splitCapsuleRef(ref);
  if (spec === undefined || semver.valid(spec) !== spec) {
    throw new UsageError(
      `Expected <handle>/<name>@<version> with an exact version, e.g. acme/csv-cleaner@1.2.3`,
    );
  }
  return { name, version: spec };
}

/** The API path of a capsule: `/v1/capsules/<ns>/<name>`. */
export function capsulePath(name: string): string {
  return `/v1/capsules/${name.split("/").map(encodeURIComponent).join("/")}`;
}
