import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ApiClient } from "../api.ts";
import { stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { resolveConnection } from "../config.ts";
import { CliError } from "../errors.ts";
import { capsulePath, parseExactRef } from "../lib/capsule-ref.ts";
import { type PublishedKey, type TrustedKeys, verifyCapsule } from "../lib/verify-capsule.ts";
import { emit } from "../output.ts";

async function trustedKeys(
  client: ApiClient,
  keyFile: string | undefined,
  cwd: string,
): Promise<TrustedKeys> {
  if (keyFile) {
    const path = resolve(cwd, keyFile);
    try {
      return { source: "pem", pem: await readFile(path, "utf8"), path };
    } catch (error) {
      throw new CliError(`Cannot read the key file ${path}: ${(error as Error).message}`);
    }
  }
  const list = await client.json<{ keys?: unknown }>("GET", "/.well-known/soma/keys.json", { auth: false });
  if (!Array.isArray(list.keys))
    throw new CliError("/.well-known/soma/keys.json has no keys array", { code: "BAD_RESPONSE" });
  return { source: "registry", keys: list.keys as PublishedKey[] };
}

/** `soma verify`: checks a published capsule's signature and attestation locally with node:crypto. */
export const verifyCommand: Command = {
  name: "verify",
  summary: "Verify a published capsule's signature and attestation",
  help: `Usage: soma verify <handle>/<name>@<version> [--key key.pem]

Downloads the bundle, bundle.sig and the attestation, and verifies them here, independently of the platform:
  1. bundle.sig is an ECDSA P-256 SHA-256 signature over the exact bundle bytes,
  2. the attestation's DSSE envelope signature verifies over its pre-authentication encoding,
  3. the in-toto statement's subject sha256 is the bundle's sha256 and its predicate is a Soma publish,
  4. the signing key had not expired when the capsule was published.
The key comes from /.well-known/soma/keys.json (matched by the attestation's key hint), or from --key.

Options:
  --key <file>   Trust this PEM public key instead of the platform's published keys

${COMMON_HELP}`,
  options: { key: { type: "string" } },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, env, cwd }) {
    const { name, version } = parseExactRef(positionals[0] ?? "");
    const connection = await resolveConnection(values, env);
    const client = new ApiClient(connection);
    const base = `${capsulePath(name)}/versions/${encodeURIComponent(version)}`;
    const [bundle, signature, attestation, trusted] = await Promise.all([
      client.bytes(`${base}/bundle`),
      client.text(`${base}/bundle.sig`),
      client.json<unknown>("GET", `${base}/attestation`),
      trustedKeys(client, stringOption(values, "key"), cwd),
    ]);
    const report = verifyCapsule({ name, version, bundle, signature, attestation, trusted });
    emit(io, values.json === true, { verified: true, ...report }, () => [
      `Verified ${name}@${version}`,
      `  sha256  ${report.sha256} (${report.size} bytes)`,
      ...(report.publishedAt ? [`  published ${report.publishedAt}`] : []),
      ...report.checks.map((check) => `  ✓ ${check}`),
    ]);
    return 0;
  },
};
