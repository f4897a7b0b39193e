import { AppError } from "../errors";

/** Props the agent attaches to the CapsuleHost binding it hands to a sandboxed capsule. */
export interface CapsuleHostProps {
  projectId: string;
  taskId: string;
  attemptId: string;
  capsule: string;
  permissions: string[];
}

export const MAX_ARTIFACT_BYTES = 1024 * 1024;

/** Throws PERMISSION_DENIED-style FORBIDDEN unless the capsule declared (and the project granted) it. */
export function requirePermission(props: CapsuleHostProps, permission: string): void {
  if (!props.permissions.includes(permission)) {
    throw new AppError(
      "FORBIDDEN",
      `PERMISSION_DENIED: ${props.capsule} did not declare "${permission}" in its manifest`,
    );
  }
}

/** True when the host is covered by a declared `network.egress:<host>` or `network.egress:*.<domain>`. */
export function egressAllowed(permissions: string[], hostname: string): boolean {
  const host = hostname.toLowerCase();
  return permissions.some((p) => {
    if (!p.startsWith("network.egress:")) return false;
    const allowed = p.slice("network.egress:".length);
    if (allowed.startsWith("*.")) return host.endsWith(allowed.slice(1)) && host !== allowed.slice(2);
    return host === allowed;
  });
}

/** A project artefact path: relative, no '..', no backslashes, reasonable characters and length. */
export function checkArtifactPath(path: string): string {
  const clean = path.replace(/^(\.\/)+/, "");
  if (
    clean.length === 0 ||
    clean.length > 255 ||
    clean.startsWith("/") ||
    clean.includes("\\") ||
    !/^[A-Za-z0-9._\-/]+$/.test(clean) ||
    clean.split("/").some((part) => part === "" || part === "." || part === "..")
  ) {
    throw new AppError("VALIDATION_FAILED", `"${path}" is not a valid artefact path (relative, no '..')`);
  }
  return clean;
}

export function artifactKey(projectId: string, path: string): string {
  return `projects/${projectId}/artifacts/${path}`;
}

export function artifactPrefix(projectId: string): string {
  return `projects/${projectId}/artifacts/`;
}
