import type { BundleFile } from "../domain/bundle";
import type { CapsuleManifest } from "../domain/manifest";

export const CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json";

/** Package URL of a capsule version. */
export function capsulePurl(name: string, version?: string): string {
  return `pkg:soma/${name}${version ? `@${version}` : ""}`;
}

export interface ResolvedDependency {
  name: string;
  range: string;
  /** Highest published version satisfying the range at publish time, or null if none. */
  resolvedVersion: string | null;
}

/** A CycloneDX 1.5 JSON SBOM of a bundle: every file with its sha256, and the capsule dependencies. */
export function buildSbom(input: {
  manifest: CapsuleManifest;
  bundleSha256: string;
  files: BundleFile[];
  dependencies: ResolvedDependency[];
  timestamp: string;
}): Record<string, unknown> {
  const { manifest } = input;
  const rootRef = capsulePurl(manifest.metadata.name, manifest.metadata.version);
  const depComponents = input.dependencies.map((dep) => ({
    type: "application",
    "bom-ref": capsulePurl(dep.name, dep.resolvedVersion ?? undefined),
    name: dep.name,
    ...(dep.resolvedVersion ? { version: dep.resolvedVersion } : {}),
    purl: capsulePurl(dep.name, dep.resolvedVersion ?? undefined),
    scope: "required",
    properties: [
      { name: "soma:versionRange", value: dep.range },
      { name: "soma:resolvedVersion", value: dep.resolvedVersion ?? "unresolved" },
    ],
  }));
  return {
    bomFormat: "CycloneDX",
    specVersion: "1.5",
    serialNumber: `urn:uuid:${crypto.randomUUID()}`,
    version: 1,
    metadata: {
      timestamp: input.timestamp,
      tools: { components: [{ type: "application", name: "soma-agent-edge" }] },
      component: {
        type: "application",
        "bom-ref": rootRef,
        name: manifest.metadata.name,
        version: manifest.metadata.version,
        description: manifest.spec.description,
        purl: rootRef,
        hashes: [{ alg: "SHA-256", content: input.bundleSha256 }],
        licenses: [{ expression: manifest.metadata.license }],
      },
    },
    components: [
      ...input.files.map((file) => ({
        type: "file",
        "bom-ref": `file:${file.path}`,
        name: file.path,
        hashes: [{ alg: "SHA-256", content: file.sha256 }],
        properties: [{ name: "soma:size", value: String(file.size) }],
      })),
      ...depComponents,
    ],
    dependencies: [{ ref: rootRef, dependsOn: depComponents.map((c) => c["bom-ref"]) }],
  };
}
