import { packTar } from "modern-tar";
import { artifactKey, artifactPrefix, checkArtifactPath } from "../agents/capabilities";
import { AppError } from "../errors";

/** Every artefact of a project with its size. */
export async function listArtifacts(
  bucket: R2Bucket,
  projectId: string,
): Promise<{ path: string; size: number; uploaded: string }[]> {
  const prefix = artifactPrefix(projectId);
  const items: { path: string; size: number; uploaded: string }[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list({ prefix, cursor });
    items.push(
      ...page.objects.map((o) => ({
        path: o.key.slice(prefix.length),
        size: o.size,
        uploaded: o.uploaded.toISOString(),
      })),
    );
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return items.sort((a, b) => a.path.localeCompare(b.path));
}

export async function readArtifact(bucket: R2Bucket, projectId: string, path: string): Promise<R2ObjectBody> {
  const object = await bucket.get(artifactKey(projectId, checkArtifactPath(path)));
  if (!object) throw new AppError("NOT_FOUND", `No artefact ${path}`);
  return object;
}

/** All artefacts as one .tar.gz, paths relative to the project root. */
export async function artifactArchive(bucket: R2Bucket, projectId: string): Promise<ReadableStream> {
  const items = await listArtifacts(bucket, projectId);
  const entries = [];
  for (const item of items) {
    const object = await bucket.get(artifactKey(projectId, item.path));
    if (!object) continue;
    const body = new Uint8Array(await object.arrayBuffer());
    entries.push({
      header: { name: item.path, size: body.length, type: "file" as const, mode: 0o644 },
      body,
    });
  }
  const tar = await packTar(entries);
  return new Blob([tar]).stream().pipeThrough(new CompressionStream("gzip"));
}
