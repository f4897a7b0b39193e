import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { requiredOption, stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { CliError, UsageError } from "../errors.ts";
import { CAPSULE_NAME_PATTERN, MANIFEST_FILE, RUNTIMES } from "../lib/manifest.ts";
import { emit } from "../output.ts";

const ENTRYPOINT = "dist/main.js";

const MAIN_JS = `export default {
  async run(input, ctx) {
    return { ok: true, input };
  },
};
`;

/** The starter manifest for a new capsule. */
export function starterManifest(name: string, runtime: string): Record<string, unknown> {
  return {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: { name, version: "0.1.0", category: "Other", tags: [], license: "MIT" },
    spec: {
      description: `${name}: describe what this capsule does.`,
      runtime,
      entrypoint: ENTRYPOINT,
      permissions: [],
      dependencies: {},
      tokenEstimate: { planning: 0, execution: 100 },
      inputs: { type: "object" },
      outputs: { type: "object" },
      pricing: { model: "free", amountUsd: 0 },
    },
  };
}

function readme(name: string): string {
  return `# ${name}

A Task Capsule for SomaAgent Edge.

- \`${MANIFEST_FILE}\`: the manifest (name, version, runtime, permissions, dependencies, schemas, pricing).
- \`${ENTRYPOINT}\`: the entrypoint, an ES module exporting \`default { run(input, ctx) }\`.

\`\`\`sh
soma pack .       # build a reproducible .tar.gz and print its sha256
soma publish .    # submit it to the marketplace
\`\`\`
`;
}

/** `soma init`: scaffolds a capsule folder. */
export const initCommand: Command = {
  name: "init",
  summary: "Scaffold a capsule folder",
  help: `Usage: soma init <dir> --name <handle>/<name> [--runtime worker|prompt|runner|planner]

Writes ${MANIFEST_FILE}, ${ENTRYPOINT} and README.md into <dir> (created if missing). Refuses a folder that
already has a ${MANIFEST_FILE}.

${COMMON_HELP}`,
  options: { name: { type: "string" }, runtime: { type: "string" } },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, cwd }) {
    const name = requiredOption(values, "name");
    if (!CAPSULE_NAME_PATTERN.test(name)) {
      throw new UsageError(`--name "${name}" must be <handle>/<name> in lowercase, e.g. acme/csv-cleaner`);
    }
    const runtime = stringOption(values, "runtime") ?? "worker";
    if (!(RUNTIMES as readonly string[]).includes(runtime)) {
      throw new UsageError(`--runtime must be one of ${RUNTIMES.join(", ")}`);
    }
    const dir = resolve(cwd, positionals[0] ?? ".");
    const files = [MANIFEST_FILE, ENTRYPOINT, "README.md"];
    const existing = files.filter((f) => existsSync(join(dir, f)));
    if (existing.length > 0) {
      throw new CliError(`${dir} already has ${existing.join(", ")}; not overwriting`);
    }
    await mkdir(join(dir, "dist"), { recursive: true });
    await writeFile(join(dir, MANIFEST_FILE), stringify(starterManifest(name, runtime)), { flag: "wx" });
    await writeFile(join(dir, ENTRYPOINT), MAIN_JS, { flag: "wx" });
    await writeFile(join(dir, "README.md"), readme(name), { flag: "wx" });
    emit(io, values.json === true, { dir, name, runtime, files }, () => [
      `Created ${name} in ${dir}:`,
      ...files.map((f) => `  ${f}`),
      `Edit ${MANIFEST_FILE} (description, category, permissions), then run \`soma pack ${positionals[0]}\`.`,
    ]);
    return 0;
  },
};
