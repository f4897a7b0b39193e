import { readFile, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { ApiClient } from "../api.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { requireToken, resolveConnection } from "../config.ts";
import { CliError } from "../errors.ts";
import { packCapsule, sha256Hex } from "../lib/bundle.ts";
import { emit, formatTable, truncate } from "../output.ts";

export interface Finding {
  id: string;
  severity: string;
  weight: number;
  message: string;
  file?: string;
  line?: number;
}

export interface Submission {
  id: string;
  name: string;
  version: string;
  status: string;
  riskScore: number;
  findings: Finding[];
}

async function readBundle(target: string): Promise<{ bytes: Uint8Array; sha256: string; source: string }> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(target)).isDirectory();
  } catch {
    throw new CliError(`${target} does not exist`);
  }
  if (isDirectory) {
    const packed = await packCapsule(target);
    return { bytes: packed.bytes, sha256: packed.sha256, source: `${target} (packed)` };
  }
  const bytes = await readFile(target);
  return { bytes, sha256: sha256Hex(bytes), source: target };
}

/** The findings as a table, highest weight first. */
export function findingsTable(findings: Finding[]): string {
  const sorted = [...findings].sort((a, b) => b.weight - a.weight);
  return formatTable(
    ["SEVERITY", "WEIGHT", "CHECK", "WHERE", "MESSAGE"],
    sorted.map((f) => [
      f.severity,
      String(f.weight),
      f.id,
      f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : "-",
      truncate(f.message, 100),
    ]),
  );
}

/** `soma publish`: uploads a bundle (packing a folder first) and reports the automated review. */
export const publishCommand: Command = {
  name: "publish",
  summary: "Submit a capsule to the marketplace",
  help: `Usage: soma publish <dir | bundle.tar.gz>

Packs <dir> like \`soma pack\` (or reads the archive) and uploads it (POST /v1/capsules). Prints the
submission's status (published, approved, pending_review or rejected), risk score and findings.
Exits 1 when the submission is rejected.

${COMMON_HELP}`,
  options: {},
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, env, cwd }) {
    const connection = await resolveConnection(values, env);
    requireToken(connection);
    const bundle = await readBundle(resolve(cwd, positionals[0] ?? "."));
    const client = new ApiClient(connection);
    const { submission } = await client.json<{ submission: Submission }>("POST", "/v1/capsules", {
      body: bundle.bytes,
      contentType: "application/gzip",
    });
    emit(
      io,
      values.json === true,
      { submission, bundle: { sha256: bundle.sha256, size: bundle.bytes.length } },
      () => {
        const lines = [
          `Submitted ${submission.name}@${submission.version} (${submission.id}) from ${bundle.source}`,
          `  sha256      ${bundle.sha256}`,
          `  status      ${submission.status}`,
          `  risk score  ${submission.riskScore}`,
        ];
        if (submission.findings.length === 0) lines.push("  findings    none");
        else
          lines.push(`  findings    ${submission.findings.length}`, "", findingsTable(submission.findings));
        if (submission.status === "pending_review")
          lines.push("", "A reviewer will look at it before it is published.");
        return lines;
      },
    );
    return submission.status === "rejected" ? 1 : 0;
  },
};
