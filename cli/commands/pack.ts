import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { archiveName, packCapsule } from "../lib/bundle.ts";
import { readManifest } from "../lib/manifest.ts";
import { emit, formatBytes } from "../output.ts";

/** `soma pack`: validates a capsule folder and writes a reproducible .tar.gz. */
export const packCommand: Command = {
  name: "pack",
  summary: "Build a reproducible capsule bundle (.tar.gz)",
  help: `Usage: soma pack <dir> [-o <out.tar.gz>]

Checks that <dir>/capsule.yaml parses and names an existing entrypoint, then writes a deterministic .tar.gz:
entries sorted, mtime 0, modes 0644/0755, capsule.yaml at the root, node_modules and .git skipped. Symlinks
are refused. The default output is ./<handle>-<name>-<version>.tar.gz; such archives at the folder's root
are never packed. Prints path, size and sha256.

Options:
  -o, --output <file>  Where to write the archive

${COMMON_HELP}`,
  options: { output: { type: "string", short: "o" } },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, cwd }) {
    const dir = resolve(cwd, positionals[0] ?? ".");
    const manifest = await readManifest(dir);
    const requested = stringOption(values, "output");
    const path = resolve(cwd, requested ?? archiveName(manifest.name, manifest.version));
    // The output may be inside the folder: never pack an earlier copy of the archive into itself.
    const packed = await packCapsule(dir, { exclude: [path] });
    await writeFile(path, packed.bytes);
    const result = {
      path,
      name: packed.manifest.name,
      version: packed.manifest.version,
      size: packed.size,
      sha256: packed.sha256,
      files: packed.files,
    };
    emit(io, values.json === true, result, () => [
      `Packed ${result.name}@${result.version} (${packed.files.length} files)`,
      `  path    ${path}`,
      `  size    ${packed.size} bytes (${formatBytes(packed.size)})`,
      `  sha256  ${packed.sha256}`,
    ]);
    return 0;
  },
};
