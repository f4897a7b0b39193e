import { readFile } from "node:fs/promises";
import { join } from "node:path";
import semver from "semver";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { CliError } from "../errors.ts";

export const MANIFEST_FILE = "capsule.yaml";
export const RUNTIMES = ["worker", "prompt", "runner", "planner"] as const;
/** `<handle>/<name>`, the same rule the platform applies. */
export const CAPSULE_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,37}[a-z0-9])\/[a-z0-9][a-z0-9._-]{0,63}$/;

/**
 * The fields the CLI needs before uploading. The platform validates the whole manifest; checking these early
 * turns the commonest mistakes into a local error instead of a round trip.
 */
const manifestSummarySchema = z.looseObject({
  apiVersion: z.literal("soma.dev/v1"),
  kind: z.literal("TaskCapsule"),
  metadata: z.looseObject({
    name: z.string().regex(CAPSULE_NAME_PATTERN, "must be <handle>/<name> in lowercase"),
    version: z.string().refine((v) => semver.valid(v) === v, "must be a semantic version such as 1.2.3"),
  }),
  spec: z.looseObject({
    runtime: z.enum(RUNTIMES),
    entrypoint: z.string().min(1),
  }),
});

export interface ManifestSummary {
  name: string;
  version: string;
  runtime: string;
  entrypoint: string;
}

/** Reads and checks `<dir>/capsule.yaml`; every refusal names the file and the field at fault. */
export async function readManifest(dir: string): Promise<ManifestSummary> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new CliError(
        `${path} does not exist: a capsule folder needs a ${MANIFEST_FILE} (try \`soma init\`)`,
        {
          code: "INVALID_MANIFEST",
        },
      );
    }
    throw error;
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { uniqueKeys: true, maxAliasCount: 50 });
  } catch (error) {
    throw new CliError(
      `${path} is not valid YAML: ${(error as Error).message.split("\n")[0]?.replace(/:$/, "")}`,
      {
        code: "INVALID_MANIFEST",
      },
    );
  }
  const result = manifestSummarySchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.map(String).join(".") || "(root)";
    throw new CliError(`${path} is invalid: ${where}: ${issue?.message}`, {
      code: "INVALID_MANIFEST",
      details: result.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    });
  }
  const { metadata, spec } = result.data;
  return {
    name: metadata.name,
    version: metadata.version,
    runtime: spec.runtime,
    entrypoint: spec.entrypoint,
  };
}
