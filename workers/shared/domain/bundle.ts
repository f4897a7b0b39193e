import { unpackTar } from "modern-tar";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { concatBytes, sha256Hex } from "../encoding";
import { AppError } from "../errors";
import { type CapsuleManifest, manifestSchema } from "./manifest";

export interface BundleLimits {
  maxCompressedBytes: number;
  maxUnpackedBytes: number;
  maxEntries: number;
}

export interface BundleFile {
  path: string;
  size: number;
  sha256: string;
}

export interface ParsedBundle {
  manifest: CapsuleManifest;
  /** The raw capsule.yaml text, kept for manifest diffs in review. */
  manifestText: string;
  files: BundleFile[];
  /** File contents by path, for the automated checks. */
  contents: Map<string, Uint8Array>;
  sha256: string;
  size: number;
  unpackedBytes: number;
}

export const MANIFEST_FILE = "capsule.yaml";

function invalid(message: string, details?: Record<string, unknown>): AppError {
  return new AppError("INVALID_BUNDLE", message, details);
}

/**
 * Gunzips with the runtime's native decoder (which checks every member's CRC and length) and a hard cap on
 * output: reading stops as soon as the cap is passed, so a bomb never allocates far beyond the limit.
 */
async function gunzipBounded(bytes: Uint8Array, maxOutput: number): Promise<Uint8Array> {
  if (bytes.length < 18 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) {
    throw invalid("The bundle is not gzip-compressed: expected a .tar.gz file");
  }
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream("gzip"));
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxOutput) {
        await reader.cancel();
        throw new AppError("PAYLOAD_TOO_LARGE", `The bundle unpacks to more than ${maxOutput} bytes`, {
          limit: "unpacked",
          maxBytes: maxOutput,
        });
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof AppError) throw error;
    throw invalid(`The bundle's gzip stream is corrupt: ${(error as Error).message}`);
  }
  return concatBytes(chunks, total);
}

/** Normalises an entry path or explains why it is refused. */
function checkEntryPath(raw: string): string {
  const name = raw.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  if (name === "" || name === ".") return "";
  if (raw.startsWith("/") || /^[A-Za-z]:/.test(raw)) {
    throw invalid(`Bundle entry "${raw}" has an absolute path`, { entry: raw });
  }
  if (raw.includes("\\") || raw.includes("\0")) {
    throw invalid(`Bundle entry "${raw}" has a backslash or NUL in its path`, { entry: raw });
  }
  if (name.split("/").some((part) => part === ".." || part === "." || part === "")) {
    throw invalid(`Bundle entry "${raw}" escapes or aliases the bundle root ('..', '.' or '//')`, {
      entry: raw,
    });
  }
  return name;
}

/**
 * Reads a capsule bundle: gzip (bounded), tar, safe entries only, manifest validated, entrypoint present.
 * Every refusal names the entry or manifest field at fault.
 */
export async function parseBundle(bytes: Uint8Array, limits: BundleLimits): Promise<ParsedBundle> {
  if (bytes.length > limits.maxCompressedBytes) {
    throw new AppError("PAYLOAD_TOO_LARGE", `The bundle is larger than ${limits.maxCompressedBytes} bytes`, {
      limit: "compressed",
      maxBytes: limits.maxCompressedBytes,
    });
  }
  const tar = await gunzipBounded(bytes, limits.maxUnpackedBytes);
  let entries: Awaited<ReturnType<typeof unpackTar>>;
  try {
    entries = await unpackTar(tar, { strict: true });
  } catch (error) {
    throw invalid(`The bundle is not a valid tar archive: ${(error as Error).message}`);
  }
  if (entries.length === 0) throw invalid("The bundle is not a tar archive or is empty");
  if (entries.length > limits.maxEntries) {
    throw new AppError("PAYLOAD_TOO_LARGE", `The bundle has more than ${limits.maxEntries} entries`, {
      limit: "entries",
      maxEntries: limits.maxEntries,
    });
  }

  const seen = new Set<string>();
  const contents = new Map<string, Uint8Array>();
  let unpackedBytes = 0;
  for (const entry of entries) {
    const type = entry.header.type ?? "file";
    const path = checkEntryPath(entry.header.name);
    if (type === "symlink" || type === "link") {
      throw invalid(`Bundle entry "${entry.header.name}" is a link; links are not allowed`, {
        entry: entry.header.name,
      });
    }
    if (type !== "file" && type !== "directory") {
      throw invalid(
        `Bundle entry "${entry.header.name}" is a ${type}; only files and directories are allowed`,
        {
          entry: entry.header.name,
        },
      );
    }
    if (path === "") continue;
    if (seen.has(path)) {
      throw invalid(`Bundle entry "${path}" appears more than once`, { entry: path });
    }
    seen.add(path);
    if (type === "file") {
      const data = entry.data ?? new Uint8Array(0);
      unpackedBytes += data.length;
      contents.set(path, data);
    }
  }

  const manifestBytes = contents.get(MANIFEST_FILE);
  if (!manifestBytes)
    throw invalid(`The bundle has no ${MANIFEST_FILE} at its root`, { entry: MANIFEST_FILE });
  let manifestText: string;
  let raw: unknown;
  try {
    manifestText = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(manifestBytes);
    raw = parseYaml(manifestText, { maxAliasCount: 50, uniqueKeys: true });
  } catch (error) {
    const where =
      error instanceof YAMLParseError ? ` (${error.code} at ${error.linePos?.[0]?.line ?? "?"})` : "";
    throw invalid(`${MANIFEST_FILE} is not valid YAML${where}: ${(error as Error).message.split("\n")[0]}`, {
      entry: MANIFEST_FILE,
    });
  }
  const result = manifestSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.map((i) => ({
      path: i.path.map(String).join(".") || "(root)",
      message: i.message,
    }));
    const first = issues[0];
    throw invalid(`${MANIFEST_FILE} is invalid: ${first?.path}: ${first?.message}`, {
      entry: MANIFEST_FILE,
      issues,
    });
  }
  const manifest = result.data;
  const entrypoint = manifest.spec.entrypoint.replace(/^(\.\/)+/, "");
  if (!contents.has(entrypoint)) {
    throw invalid(`The entrypoint "${manifest.spec.entrypoint}" is not a file in the bundle`, {
      entry: manifest.spec.entrypoint,
      path: "spec.entrypoint",
    });
  }

  const files: BundleFile[] = [];
  for (const [path, data] of contents) {
    files.push({ path, size: data.length, sha256: await sha256Hex(data) });
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    manifest,
    manifestText,
    files,
    contents,
    sha256: await sha256Hex(bytes),
    size: bytes.length,
    unpackedBytes,
  };
}
