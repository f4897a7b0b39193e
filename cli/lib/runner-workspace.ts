import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";
import { gunzipSync } from "node:zlib";
import { unpackTar } from "modern-tar";

/** The folders and files of one job, all under a fresh temporary directory. */
export interface Workspace {
  root: string;
  /** The unpacked capsule bundle. */
  capsuleDir: string;
  /** The project's artefacts; the capsule's working directory. */
  projectDir: string;
  /** HOME and TMPDIR of the capsule's processes. */
  homeDir: string;
  tmpDir: string;
  inputFile: string;
  outputFile: string;
}

/** Makes a fresh workspace under `base` (the system temp folder by default). */
export async function createWorkspace(base = tmpdir()): Promise<Workspace> {
  await mkdir(base, { recursive: true });
  const root = await mkdtemp(join(base, "soma-job-"));
  const workspace: Workspace = {
    root,
    capsuleDir: join(root, "capsule"),
    projectDir: join(root, "project"),
    homeDir: join(root, "home"),
    tmpDir: join(root, "tmp"),
    inputFile: join(root, "input.json"),
    outputFile: join(root, "output.json"),
  };
  for (const dir of [workspace.capsuleDir, workspace.projectDir, workspace.homeDir, workspace.tmpDir]) {
    await mkdir(dir, { recursive: true });
  }
  return workspace;
}

export async function removeWorkspace(workspace: Workspace): Promise<void> {
  // Capsules may leave read-only folders behind; make them writable so removal cannot fail on them.
  await rm(workspace.root, { recursive: true, force: true, maxRetries: 3 }).catch(async () => {
    await chmod(workspace.root, 0o700).catch(() => {});
    await rm(workspace.root, { recursive: true, force: true });
  });
}

/** Refused archive contents: the message names the entry. */
export class UnsafeArchiveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeArchiveError";
  }
}

export interface ExtractLimits {
  /** Largest total of unpacked bytes (a gzip-bomb guard). */
  maxBytes: number;
  maxEntries: number;
}

/** A safe relative path for an archive entry, or an error: no absolute paths, no '..', no backslashes. */
export function safeEntryPath(name: string): string {
  const clean = name.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  if (
    clean === "" ||
    clean.startsWith("/") ||
    clean.includes("\\") ||
    clean.includes("\0") ||
    clean.split("/").some((part) => part === "" || part === "." || part === "..")
  ) {
    throw new UnsafeArchiveError(`Refusing the archive entry "${name}": not a plain relative path`);
  }
  return clean;
}

/**
 * Unpacks a .tar.gz into `dest`: regular files and folders only (links, devices and FIFOs are refused), every
 * path relative and inside `dest`, within the size and entry limits. Files keep their executable bit only.
 */
export async function extractTarGz(
  bytes: Uint8Array,
  dest: string,
  limits: ExtractLimits,
): Promise<string[]> {
  let tar: Uint8Array;
  try {
    tar = gunzipSync(bytes, { maxOutputLength: limits.maxBytes + 1024 * 1024 });
  } catch (error) {
    throw new UnsafeArchiveError(
      `The archive does not gunzip within the limits: ${(error as Error).message}`,
    );
  }
  const entries = await unpackTar(tar, { strict: true });
  if (entries.length > limits.maxEntries) {
    throw new UnsafeArchiveError(`The archive has ${entries.length} entries, more than ${limits.maxEntries}`);
  }
  const root = resolve(dest);
  const written: string[] = [];
  let total = 0;
  for (const { header, data } of entries) {
    const type = header.type ?? "file";
    if (type !== "file" && type !== "directory") {
      throw new UnsafeArchiveError(`Refusing the archive entry "${header.name}": it is a ${type}`);
    }
    const path = safeEntryPath(header.name);
    const target = resolve(root, path);
    if (!target.startsWith(root + sep)) {
      throw new UnsafeArchiveError(`Refusing the archive entry "${header.name}": it leaves the folder`);
    }
    if (type === "directory") {
      await mkdir(target, { recursive: true });
      continue;
    }
    total += data?.length ?? 0;
    if (total > limits.maxBytes) {
      throw new UnsafeArchiveError(`The archive unpacks to more than ${limits.maxBytes} bytes`);
    }
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, data ?? new Uint8Array(), {
      flag: "wx",
      mode: (header.mode ?? 0o644) & 0o111 ? 0o755 : 0o644,
    });
    written.push(path);
  }
  return written;
}
