/** R2 object keys: one place that knows where bundles and their evidence live. */

export function submissionBundleKey(submissionId: string): string {
  return `submissions/${submissionId}/bundle.tar.gz`;
}

function versionPrefix(name: string, version: string): string {
  return `capsules/${name}/${version}`;
}

export const publishedKeys = (name: string, version: string) => ({
  bundle: `${versionPrefix(name, version)}/bundle.tar.gz`,
  signature: `${versionPrefix(name, version)}/bundle.sig`,
  attestation: `${versionPrefix(name, version)}/attestation.json`,
  sbom: `${versionPrefix(name, version)}/sbom.json`,
});

/** Reads a whole object as bytes, or null when absent. */
export async function readObject(bucket: R2Bucket, key: string): Promise<Uint8Array | null> {
  const object = await bucket.get(key);
  if (!object) return null;
  return new Uint8Array(await object.arrayBuffer());
}
