import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gunzipSync } from "fflate";
import { unpackTar } from "modern-tar";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { buildTarGz, packCapsule, sha256Hex } from "../../cli/lib/bundle.ts";
import { preAuthEncoding } from "../../cli/lib/dsse.ts";
import {
  IN_TOTO_PAYLOAD_TYPE,
  openSshFingerprint,
  type PublishedKey,
  SIGSTORE_BUNDLE_MEDIA_TYPE,
  verifyCapsule,
} from "../../cli/lib/verify-capsule.ts";

const root = resolve(import.meta.dirname, "../..");

/** The platform started by tests/e2e/global-setup.ts (or SOMA_E2E_URL when this file runs on its own). */
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL)?.replace(/\/+$/, "");
const hasSshKeygen = spawnSync("ssh-keygen", ["-?"]).error === undefined;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "soma-cli-test-"));
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Runs the real CLI the way a user does in this repository: `npx soma ...` (npx supplies Node 22). */
function soma(
  args: string[],
  options: { config: string; cwd?: string } = { config: "" },
): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SOMA_CONFIG: options.config || join(scratch, "none.json"),
  };
  delete env.SOMA_URL;
  delete env.SOMA_TOKEN;
  return new Promise((done, failed) => {
    const child = spawn("npx", ["--no-install", "soma", ...args], {
      cwd: options.cwd ?? root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.once("error", failed);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

function p256(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" });
}

async function writeCapsule(dir: string, name: string, extra: Record<string, string> = {}): Promise<void> {
  const manifest = {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: { name, version: "1.0.0", category: "Testing", tags: ["cli"], license: "MIT" },
    spec: { description: "A test capsule.", runtime: "worker", entrypoint: "dist/main.js" },
  };
  await mkdir(join(dir, "dist"), { recursive: true });
  await writeFile(join(dir, "capsule.yaml"), stringifyYaml(manifest));
  await writeFile(join(dir, "dist/main.js"), "export default { async run(input) { return input; } };\n");
  for (const [path, text] of Object.entries(extra)) {
    await mkdir(join(dir, path, ".."), { recursive: true });
    await writeFile(join(dir, path), text);
  }
}

describe("soma pack (no server)", () => {
  it("builds byte-identical archives from the same files in any order", async () => {
    const files = [
      { path: "dist/main.js", mode: 0o755 as const, data: new TextEncoder().encode("export default {};\n") },
      { path: "capsule.yaml", mode: 0o644 as const, data: new TextEncoder().encode("kind: TaskCapsule\n") },
      { path: "README.md", mode: 0o644 as const, data: new TextEncoder().encode("# hi\n") },
    ];
    const first = await buildTarGz(files);
    const second = await buildTarGz([...files].reverse());
    expect(sha256Hex(second)).toBe(sha256Hex(first));
    expect(Buffer.compare(Buffer.from(first), Buffer.from(second))).toBe(0);
    // gzip MTIME (bytes 4-7) is zero, so the archive does not depend on when it was built.
    expect([...first.subarray(4, 8)]).toEqual([0, 0, 0, 0]);

    const entries = await unpackTar(gunzipSync(first), { strict: true });
    expect(entries.map((e) => e.header.name)).toEqual(["README.md", "capsule.yaml", "dist/main.js"]);
    expect(entries.map((e) => e.header.mode)).toEqual([0o644, 0o644, 0o755]);
    expect(
      entries.every((e) => e.header.mtime?.getTime() === 0 && e.header.uid === 0 && e.header.gid === 0),
    ).toBe(true);
  });

  it("packs a folder to the same sha256 whatever the files' timestamps, skipping node_modules and .git", async () => {
    const dir = join(scratch, "determinism");
    await writeCapsule(dir, "acme/determinism", { "node_modules/dep/index.js": "x", ".git/HEAD": "ref" });
    const first = await packCapsule(dir);
    await utimes(join(dir, "capsule.yaml"), new Date(), new Date("2001-01-01"));
    await utimes(join(dir, "dist/main.js"), new Date(), new Date());
    const second = await packCapsule(dir);
    expect(second.sha256).toBe(first.sha256);
    expect(first.files.map((f) => f.path)).toEqual(["capsule.yaml", "dist/main.js"]);

    const entries = await unpackTar(gunzipSync(first.bytes), { strict: true });
    expect(entries[0]?.header.name).toBe("capsule.yaml");
  });

  it("records executable files as 0755 and everything else as 0644", async () => {
    const dir = join(scratch, "modes");
    await writeCapsule(dir, "acme/modes", { "bin/tool.sh": "#!/bin/sh\n" });
    await chmod(join(dir, "bin/tool.sh"), 0o700);
    await chmod(join(dir, "capsule.yaml"), 0o600);
    const packed = await packCapsule(dir);
    expect(Object.fromEntries(packed.files.map((f) => [f.path, f.mode]))).toEqual({
      "bin/tool.sh": "0755",
      "capsule.yaml": "0644",
      "dist/main.js": "0644",
    });
  });

  it("refuses to pack a folder containing a symlink", async () => {
    const dir = join(scratch, "symlink");
    await writeCapsule(dir, "acme/symlink");
    await symlink("/etc/passwd", join(dir, "passwd"));
    await expect(packCapsule(dir)).rejects.toThrow(/symlink passwd/);
  });

  it("refuses a manifest whose entrypoint is missing, naming the field", async () => {
    const dir = join(scratch, "no-entrypoint");
    await writeCapsule(dir, "acme/no-entrypoint");
    await rm(join(dir, "dist/main.js"));
    await expect(packCapsule(dir)).rejects.toThrow(/dist\/main\.js \(spec\.entrypoint\)/);
  });
});

describe("DSSE pre-authentication encoding", () => {
  it("matches the DSSE specification's example", () => {
    const pae = preAuthEncoding("http://example.com/HelloWorld", new TextEncoder().encode("hello world"));
    expect(pae.toString("utf8")).toBe("DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  });

  it("counts lengths in bytes, not characters", () => {
    const pae = preAuthEncoding("tÿpe", new TextEncoder().encode("é"));
    expect(pae.toString("utf8")).toBe("DSSEv1 5 tÿpe 2 é");
  });

  it("keeps an empty payload and binary bytes exactly", () => {
    expect(preAuthEncoding("t", new Uint8Array()).toString("utf8")).toBe("DSSEv1 1 t 0 ");
    const binary = preAuthEncoding("t", new Uint8Array([0, 255, 10]));
    expect([...binary.subarray(-3)]).toEqual([0, 255, 10]);
  });
});

describe("verifyCapsule (no server)", () => {
  const signer = p256();
  const keyid = openSshFingerprint(signer.publicKey);
  const bundle = new TextEncoder().encode("pretend this is a tarball");
  const digest = createHash("sha256").update(bundle).digest("hex");

  function attestationFor(statement: Record<string, unknown>, key = signer.privateKey): unknown {
    const payload = Buffer.from(JSON.stringify(statement));
    const sig = sign("sha256", preAuthEncoding(IN_TOTO_PAYLOAD_TYPE, payload), { key, dsaEncoding: "der" });
    return {
      mediaType: SIGSTORE_BUNDLE_MEDIA_TYPE,
      verificationMaterial: { publicKey: { hint: keyid } },
      dsseEnvelope: {
        payload: payload.toString("base64"),
        payloadType: IN_TOTO_PAYLOAD_TYPE,
        signatures: [{ sig: sig.toString("base64"), keyid }],
      },
    };
  }

  const statement = (overrides: Record<string, unknown> = {}) => ({
    _type: "https://in-toto.io/Statement/v1",
    subject: [{ name: "pkg:soma/acme/x@1.0.0", digest: { sha256: digest } }],
    predicateType: "https://soma.dev/attestation/publish/v1",
    predicate: { capsule: { name: "acme/x", version: "1.0.0" }, publishedAt: "2026-01-01T00:00:00.000Z" },
    ...overrides,
  });

  const published = (expires: string | null = null): PublishedKey[] => [
    {
      keyid,
      keytype: "ecdsa-sha2-nistp256",
      scheme: "ecdsa-sha2-nistp256",
      key: signer.publicKey.export({ format: "der", type: "spki" }).toString("base64"),
      expires,
    },
  ];

  const input = (overrides: Partial<Parameters<typeof verifyCapsule>[0]> = {}) => ({
    name: "acme/x",
    version: "1.0.0",
    bundle,
    signature: sign("sha256", bundle, { key: signer.privateKey, dsaEncoding: "der" }).toString("base64"),
    attestation: attestationFor(statement()),
    trusted: { source: "registry" as const, keys: published() },
    ...overrides,
  });

  it("accepts a correctly signed and attested bundle and reports each check it made", () => {
    const report = verifyCapsule(input());
    expect(report.sha256).toBe(digest);
    expect(report.keyid).toBe(keyid);
    expect(report.checks).toHaveLength(5);
  });

  it.skipIf(!hasSshKeygen)("computes key ids exactly as ssh-keygen fingerprints the key", async () => {
    const pemPath = join(scratch, "fingerprint.pem");
    await writeFile(pemPath, signer.publicKey.export({ format: "pem", type: "spki" }).toString());
    const openSsh = execFileSync("ssh-keygen", ["-i", "-m", "PKCS8", "-f", pemPath], { encoding: "utf8" });
    const sshPath = join(scratch, "fingerprint.pub");
    await writeFile(sshPath, openSsh);
    const listed = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", sshPath], { encoding: "utf8" });
    expect(listed.split(" ")[1]).toBe(keyid);
  });

  it("rejects a bundle signature made by another key", () => {
    const other = p256();
    const signature = sign("sha256", bundle, { key: other.privateKey, dsaEncoding: "der" }).toString(
      "base64",
    );
    expect(() => verifyCapsule(input({ signature }))).toThrow(
      /bundle signature \(bundle\.sig\) does not verify/,
    );
  });

  it("rejects a statement whose subject is another artefact, even when validly signed", () => {
    const attestation = attestationFor(
      statement({ subject: [{ name: "x", digest: { sha256: "0".repeat(64) } }] }),
    );
    expect(() => verifyCapsule(input({ attestation }))).toThrow(/subject digest is 0{64}/);
  });

  it("rejects an envelope signed by another key", () => {
    const attestation = attestationFor(statement(), p256().privateKey);
    expect(() => verifyCapsule(input({ attestation }))).toThrow(/DSSE envelope signature does not verify/);
  });

  it("rejects a publish that happened after the key expired", () => {
    const trusted = { source: "registry" as const, keys: published("2025-06-01T00:00:00.000Z") };
    expect(() => verifyCapsule(input({ trusted }))).toThrow(/after key .* expired/);
  });

  it("rejects a key list entry whose keyid is not the key's fingerprint", () => {
    const keys = published().map((k) => ({
      ...k,
      key: p256().publicKey.export({ format: "der", type: "spki" }).toString("base64"),
    }));
    expect(() => verifyCapsule(input({ trusted: { source: "registry", keys } }))).toThrow(/wrong keyid/);
  });

  it("rejects an attestation for another version", () => {
    const attestation = attestationFor(
      statement({ predicate: { capsule: { name: "acme/x", version: "2.0.0" } } }),
    );
    expect(() => verifyCapsule(input({ attestation }))).toThrow(/for acme\/x@2\.0\.0, not acme\/x@1\.0\.0/);
  });
});

describe("soma command line (no server)", () => {
  it("prints help and exits 0", async () => {
    const result = await soma(["--help"]);
    expect(result.code).toBe(0);
    for (const command of ["signup", "login", "init", "pack", "publish", "search", "install", "verify"]) {
      expect(result.stdout).toContain(command);
    }
    const sub = await soma(["verify", "--help"]);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain("Usage: soma verify");
  });

  it("exits 2 on an unknown command, an unknown option or a missing argument", async () => {
    expect((await soma(["frobnicate"])).code).toBe(2);
    expect((await soma(["pack", "--frob"])).code).toBe(2);
    const missing = await soma(["install", "--url", "http://127.0.0.1:9"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("USAGE");
  });

  it("exits 2 when no server URL is configured", async () => {
    const result = await soma(["search", "x"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("No server URL");
  });

  it("scaffolds with init and packs the scaffold reproducibly", async () => {
    const dir = join(scratch, "scaffold");
    const init = await soma(["init", dir, "--name", "acme/scaffold"]);
    expect(init.code).toBe(0);
    const manifest = parseYaml(await readFile(join(dir, "capsule.yaml"), "utf8"));
    expect(manifest.metadata.name).toBe("acme/scaffold");
    expect(manifest.spec.runtime).toBe("worker");
    expect(await readFile(join(dir, "dist/main.js"), "utf8")).toContain("return { ok: true, input }");
    expect(existsSync(join(dir, "README.md"))).toBe(true);
    expect((await soma(["init", dir, "--name", "acme/scaffold"])).code).toBe(1);

    const a = await soma(["pack", dir, "-o", join(scratch, "a.tar.gz"), "--json"]);
    const b = await soma(["pack", dir, "-o", join(scratch, "b.tar.gz"), "--json"]);
    expect(a.code).toBe(0);
    expect(JSON.parse(b.stdout).sha256).toBe(JSON.parse(a.stdout).sha256);
    expect(sha256Hex(await readFile(join(scratch, "a.tar.gz")))).toBe(JSON.parse(a.stdout).sha256);
  });
});

describe.skipIf(!baseUrl)("soma against a running platform", () => {
  const url = baseUrl ?? "";
  const handle = `cli${randomBytes(5).toString("hex")}`;
  const name = `${handle}/hello-cli`;
  const word = `zq${randomBytes(4).toString("hex")}`;
  let config: string;
  let capsuleDir: string;
  let packedSha: string;

  beforeAll(async () => {
    config = join(scratch, "e2e-config.json");
    capsuleDir = join(scratch, "hello-cli");
  });

  it("signs up and saves the new API key", async () => {
    const result = await soma(
      ["signup", "--handle", handle, "--email", `${handle}@example.com`, "--url", url, "--json"],
      {
        config,
      },
    );
    expect(result.code, result.stderr).toBe(0);
    const body = JSON.parse(result.stdout);
    expect(body.account.handle).toBe(handle);
    expect(body.apiKey).toMatch(/^soma_/);
    const saved = JSON.parse(await readFile(config, "utf8"));
    expect(saved).toEqual({ url, token: body.apiKey });
  });

  it("logs in with the saved key and refuses an unknown one", async () => {
    const saved = JSON.parse(await readFile(config, "utf8"));
    const ok = await soma(["login", "--url", url, "--token", saved.token], { config });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("API key is valid");

    const otherConfig = join(scratch, "bad-login.json");
    const bad = await soma(["login", "--url", url, "--token", "soma_notarealkey"], { config: otherConfig });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("UNAUTHENTICATED");
    expect(existsSync(otherConfig)).toBe(false);
  });

  it("initialises and packs a capsule reproducibly", async () => {
    expect((await soma(["init", capsuleDir, "--name", name], { config })).code).toBe(0);
    const manifestPath = join(capsuleDir, "capsule.yaml");
    const manifest = parseYaml(await readFile(manifestPath, "utf8"));
    manifest.metadata.category = "Testing";
    manifest.metadata.tags = ["cli-e2e"];
    manifest.spec.description = `End-to-end capsule ${word} published by the CLI test.`;
    manifest.spec.permissions = ["artifacts.read"];
    await writeFile(manifestPath, stringifyYaml(manifest));

    const first = await soma(["pack", capsuleDir, "-o", join(scratch, "first.tar.gz")], { config });
    const second = await soma(["pack", capsuleDir, "-o", join(scratch, "second.tar.gz")], { config });
    expect(first.code, first.stderr).toBe(0);
    const sha = (out: string) => out.match(/sha256\s+([0-9a-f]{64})/)?.[1];
    packedSha = sha(first.stdout) ?? "";
    expect(packedSha).toMatch(/^[0-9a-f]{64}$/);
    expect(sha(second.stdout)).toBe(packedSha);
  });

  it("publishes the folder and reports status, risk score and findings", async () => {
    const result = await soma(["publish", capsuleDir], { config });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Submitted ${name}@0.1.0`);
    expect(result.stdout).toMatch(/status\s+published/);
    expect(result.stdout).toMatch(/risk score\s+0\.\d+|risk score\s+0\b/);
    expect(result.stdout).toContain(`sha256      ${packedSha}`);
  });

  it("finds the published capsule by search", async () => {
    const result = await soma(["search", word], { config });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/NAME\s+VERSION\s+CATEGORY/);
    expect(result.stdout).toContain(name);

    const json = await soma(
      ["search", word, "--category", "Testing", "--sort", "recent", "--limit", "5", "--json"],
      {
        config,
      },
    );
    const page = JSON.parse(json.stdout);
    expect(page.items.map((i: { name: string }) => i.name)).toContain(name);
  });

  it("refuses to install until the permissions are accepted, naming them", async () => {
    const result = await soma(["install", name], { config });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("PERMISSIONS_NOT_ACCEPTED");
    expect(result.stderr).toContain("artifacts.read");
    expect(result.stderr).toContain("--accept-permissions");
  });

  it("installs with --yes, prints the resolved tree and writes the lock", async () => {
    const lockPath = join(scratch, "soma.lock.json");
    const result = await soma(
      ["install", `${name}@^0.1.0`, "--yes", "--budget", "5000", "--lock", lockPath],
      {
        config,
      },
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain("Permissions granted: artifacts.read");
    expect(result.stdout).toContain(`${name}@0.1.0  sha256:${packedSha.slice(0, 12)}`);
    const lock = JSON.parse(await readFile(lockPath, "utf8"));
    expect(lock.packages).toHaveLength(1);
    expect(lock.packages[0]).toMatchObject({ name, version: "0.1.0", sha256: packedSha });

    const explicit = await soma(["install", name, "--accept-permissions", "artifacts.read", "--json"], {
      config,
    });
    expect(explicit.code, explicit.stderr).toBe(0);
    expect(JSON.parse(explicit.stdout).lock.packages[0].sha256).toBe(packedSha);
  });

  it("prints the whole dependency tree of a capsule with dependencies", async () => {
    const appDir = join(scratch, "hello-app");
    const app = `${handle}/hello-app`;
    expect((await soma(["init", appDir, "--name", app], { config })).code).toBe(0);
    const manifestPath = join(appDir, "capsule.yaml");
    const manifest = parseYaml(await readFile(manifestPath, "utf8"));
    manifest.spec.dependencies = { [name]: "^0.1.0" };
    await writeFile(manifestPath, stringifyYaml(manifest));
    const published = await soma(["publish", appDir, "--json"], { config });
    expect(published.code, published.stderr).toBe(0);
    expect(JSON.parse(published.stdout).submission.status).toBe("published");

    const result = await soma(["install", app, "--accept-permissions", "artifacts.read"], { config });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^${app}@0\\.1\\.0 .*\\n└── ${name}@0\\.1\\.0 `, "m"));
  });

  it("verifies the published bundle, signature and attestation independently", async () => {
    const result = await soma(["verify", `${name}@0.1.0`], { config });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Verified ${name}@0.1.0`);
    expect(result.stdout).toContain(packedSha);
    expect(result.stdout).toContain("bundle signature");
    expect(result.stdout).toContain("DSSE signature");

    // The same check with the platform key given as a PEM file.
    const keys = (await (await fetch(`${url}/.well-known/soma/keys.json`)).json()) as {
      keys: PublishedKey[];
    };
    const current = keys.keys.find((k) => k.expires === null) ?? keys.keys[0];
    const pem = createPublicKey({
      key: Buffer.from(current?.key ?? "", "base64"),
      format: "der",
      type: "spki",
    })
      .export({ format: "pem", type: "spki" })
      .toString();
    const keyFile = join(scratch, "platform.pem");
    await writeFile(keyFile, pem);
    const withKey = await soma(["verify", `${name}@0.1.0`, "--key", keyFile, "--json"], { config });
    expect(withKey.code, withKey.stderr).toBe(0);
    expect(JSON.parse(withKey.stdout)).toMatchObject({ verified: true, sha256: packedSha });
  });

  it("fails verification with exit 1 when given a key that did not sign the capsule", async () => {
    const wrongKey = join(scratch, "wrong.pem");
    await writeFile(wrongKey, p256().publicKey.export({ format: "pem", type: "spki" }).toString());
    const result = await soma(["verify", `${name}@0.1.0`, "--key", wrongKey], { config });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("VERIFICATION_FAILED");
    expect(result.stderr).toContain("bundle signature (bundle.sig) does not verify");
  });

  it("reports a missing version with the API's error code", async () => {
    const result = await soma(["verify", `${name}@9.9.9`], { config });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("NOT_FOUND");
    const json = await soma(["verify", `${name}@9.9.9`, "--json"], { config });
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout).error).toMatchObject({ code: "NOT_FOUND", requestId: expect.any(String) });
  });
});
