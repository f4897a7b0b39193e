import { createHash } from "node:crypto";
import { lstat, readdir, readFile } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { CliError } from "../errors.ts";
import { MANIFEST_FILE, type ManifestSummary, readManifest } from "./manifest.ts";

/** Folders never packed, at any depth. */
export const SKIPPED_DIRECTORIES = new Set(["node_modules", ".git"]);

export interface BundleFile {
  /** POSIX path relative to the capsule folder. */
  path: string;
  mode: 0o644 | 0o755;
  data: Uint8Array;
}

export interface PackedBundle {
  bytes: Uint8Array;
  sha256: string;
  size: number;
  manifest: ManifestSummary;
  files: { path: string; size: number; mode: string }[];
}

/** Lowercase hex sha256 of bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/**
 * Lists the regular files of a capsule folder, sorted by path. Symlinks and special files are refused (the
 * platform refuses links, and following them could pack files from outside the folder).
 */
export async function collectFiles(
  dir: string,
  exclude: string[] = [],
  skip: (path: string) => boolean = () => false,
): Promise<BundleFile[]> {
  const root = resolve(dir);
  const excluded = new Set(exclude.map((p) => resolve(p)));
  const files: BundleFile[] = [];
  async function walk(folder: string): Promise<void> {
    for (const entry of await readdir(folder, { withFileTypes: true })) {
      const absolute = join(folder, entry.name);
      const path = relative(root, absolute).split(sep).join("/");
      if (excluded.has(absolute) || skip(path)) continue;
      const stats = await lstat(absolute);
      if (stats.isSymbolicLink()) {
        throw new CliError(`Refusing to pack the symlink ${path}: bundles may only contain regular files`, {
          code: "INVALID_BUNDLE",
        });
      }
      if (stats.isDirectory()) {
        if (!SKIPPED_DIRECTORIES.has(entry.name)) await walk(absolute);
      } else if (stats.isFile()) {
        files.push({ path, mode: stats.mode & 0o100 ? 0o755 : 0o644, data: await readFile(absolute) });
      } else {
        throw new CliError(`Refusing to pack ${path}: it is neither a regular file nor a folder`, {
          code: "INVALID_BUNDLE",
        });
      }
    }
  }
  await walk(root);
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Builds a reproducible .tar.gz: entries sorted by path, mtime 0, uid/gid 0, no owner names, modes 0644/0755,
 * gzip header without a timestamp or file name. The same files always give the same bytes.
 */
export async function buildTarGz(files: BundleFile[]): Promise<Uint8Array> {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]?.path === sorted[i - 1]?.path)
      throw new CliError(`Duplicate bundle entry ${sorted[i]?.path}`);
  }
  const tar = await packTar(
    sorted.map((file) => ({
      header: {
        name: file.path,
        size: file.data.length,
        type: "file" as const,
        mode: file.mode,
        mtime: new Date(0),
        uid: 0,
        gid: 0,
        uname: "",
        gname: "",
      },
      body: file.data,
    })),
  );
  return gzipSync(tar, { level: 9, mtime: 0 });
}

/** Normalises the manifest's entrypoint, refusing paths that leave the folder. */
function entrypointPath(entrypoint: string): string {
  const path = entrypoint.replace(/^(\.\/)+/, "");
  if (path.startsWith("/") || path.split("/").some((part) => part === ".." || part === "")) {
    throw new CliError(`spec.entrypoint "${entrypoint}" must be a relative path inside the capsule folder`, {
      code: "INVALID_MANIFEST",
    });
  }
  return path;
}

/** `<handle>-<name>-<version>.tar.gz`, the archive name `soma pack` writes by default. */
export function archiveName(name: string, version: string): string {
  return `${name.replace("/", "-")}-${version}.tar.gz`;
}

/**
 * Validates a capsule folder (manifest parses, entrypoint present) and packs it deterministically. Archives of
 * this capsule left at the folder's root by earlier `soma pack` runs are not packed.
 */
export async function packCapsule(dir: string, options: { exclude?: string[] } = {}): Promise<PackedBundle> {
  const manifest = await readManifest(dir);
  const prefix = archiveName(manifest.name, "");
  const isOwnArchive = (path: string) =>
    !path.includes("/") && path.startsWith(prefix) && path.endsWith(".tar.gz");
  const files = await collectFiles(dir, options.exclude, isOwnArchive);
  const entrypoint = entrypointPath(manifest.entrypoint);
  if (!files.some((f) => f.path === MANIFEST_FILE)) {
    throw new CliError(`${MANIFEST_FILE} must be a regular file at the capsule folder's root`, {
      code: "INVALID_MANIFEST",
    });
  }
  if (!files.some((f) => f.path === entrypoint)) {
    throw new CliError(
      `The entrypoint ${manifest.entrypoint} (spec.entrypoint) is not a file in ${dir}; build it before packing`,
      { code: "INVALID_MANIFEST" },
    );
  }
  const bytes = await buildTarGz(files);
  return {
    bytes,
    sha256: sha256Hex(bytes),
    size: bytes.length,
    manifest,
    files: files.map((f) => ({
      path: f.path,
      size: f.data.length,
      mode: f.mode.toString(8).padStart(4, "0"),
    })),
  };
}
