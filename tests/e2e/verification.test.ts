import { execFileSync } from "node:child_process";
import { createHash, createPublicKey } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleFromJSON } from "@sigstore/bundle";
import { toSignedEntity, Verifier } from "@sigstore/verify";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { stringify } from "yaml";

// Independent verifiers only: openssl for the blob signature, sigstore-js for the attestation envelope.

const baseUrl = (): string => inject("baseUrl" as never) ?? process.env.SOMA_E2E_URL;

interface Published {
  name: string;
  version: string;
  bundle: Buffer;
  signature: string;
  attestation: Record<string, unknown>;
  pem: string;
  dir: string;
}

async function publishCapsule(): Promise<Published> {
  const handle = `verify${Date.now().toString(36)}`;
  const signup = await fetch(`${baseUrl()}/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json", "cf-connecting-ip": "198.51.100.7" },
    body: JSON.stringify({ handle, email: `${handle}@example.com` }),
  });
  expect(signup.status).toBe(201);
  const { apiKey } = (await signup.json()) as { apiKey: string };
  const name = `${handle}/verified`;
  const manifest = {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: { name, version: "1.0.0", category: "Testing", tags: ["verify"], license: "MIT" },
    spec: {
      description: "Checked by openssl and sigstore-js",
      runtime: "worker",
      entrypoint: "main.js",
      permissions: [],
    },
  };
  const tar = await packTar(
    [
      { header: { name: "capsule.yaml", size: 0, type: "file" as const }, body: stringify(manifest) },
      {
        header: { name: "main.js", size: 0, type: "file" as const },
        body: "export default { run: (i) => i };\n",
      },
    ].map((e) => ({ ...e, header: { ...e.header, size: Buffer.byteLength(e.body) } })),
  );
  const res = await fetch(`${baseUrl()}/v1/capsules`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/gzip" },
    body: gzipSync(tar),
  });
  expect(res.status).toBe(201);
  const base = `${baseUrl()}/v1/capsules/${name}/versions/1.0.0`;
  const dir = await mkdtemp(join(tmpdir(), "soma-verify-"));
  const published: Published = {
    name,
    version: "1.0.0",
    bundle: Buffer.from(await (await fetch(`${base}/bundle`)).arrayBuffer()),
    signature: (await (await fetch(`${base}/bundle.sig`)).text()).trim(),
    attestation: (await (await fetch(`${base}/attestation`)).json()) as Record<string, unknown>,
    pem: await (await fetch(`${baseUrl()}/.well-known/soma/signing-key.pem`)).text(),
    dir,
  };
  await writeFile(join(dir, "capsule.tar.gz"), published.bundle);
  await writeFile(join(dir, "bundle.sig.der"), Buffer.from(published.signature, "base64"));
  await writeFile(join(dir, "cosign.pub"), published.pem);
  return published;
}

function opensslVerify(dir: string, file: string): { ok: boolean; output: string } {
  try {
    const output = execFileSync(
      "openssl",
      [
        "dgst",
        "-sha256",
        "-verify",
        join(dir, "cosign.pub"),
        "-signature",
        join(dir, "bundle.sig.der"),
        join(dir, file),
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    return { ok: true, output };
  } catch (error) {
    return { ok: false, output: String((error as { stdout?: string }).stdout ?? error) };
  }
}

function sigstoreVerify(attestation: Record<string, unknown>, pem: string): void {
  const publicKey = createPublicKey(pem);
  const verifier = new Verifier(
    {
      certificateAuthorities: [],
      timestampAuthorities: [],
      tlogs: [],
      ctlogs: [],
      publicKey: () => ({ publicKey, validFor: () => true }),
    },
    { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 },
  );
  verifier.verify(toSignedEntity(bundleFromJSON(attestation)));
}

/** sigstore-js does not bind a DSSE attestation to the artefact: the subject digest is checked here. */
function subjectDigest(attestation: Record<string, unknown>): string {
  const envelope = attestation.dsseEnvelope as { payload: string };
  const statement = JSON.parse(Buffer.from(envelope.payload, "base64").toString("utf8")) as {
    subject: { digest: { sha256: string } }[];
    predicateType: string;
  };
  expect(statement.predicateType).toBe("https://soma.dev/attestation/publish/v1");
  return statement.subject[0]!.digest.sha256;
}

describe("published capsules verify with standard tools", () => {
  let published: Published;
  beforeAll(async () => {
    published = await publishCapsule();
  });

  it("openssl accepts the bundle signature with the published key", () => {
    const result = opensslVerify(published.dir, "capsule.tar.gz");
    expect(result.output.trim()).toBe("Verified OK");
    expect(result.ok).toBe(true);
  });

  it("sigstore-js accepts the attestation and its subject is the bundle's sha256", () => {
    expect(() => sigstoreVerify(published.attestation, published.pem)).not.toThrow();
    expect(subjectDigest(published.attestation)).toBe(
      createHash("sha256").update(published.bundle).digest("hex"),
    );
  });

  it("a one-byte change in the bundle fails both checks", async () => {
    const tampered = Buffer.from(published.bundle);
    tampered[100] = (tampered[100] ?? 0) ^ 0x01;
    await writeFile(join(published.dir, "tampered.tar.gz"), tampered);
    expect(opensslVerify(published.dir, "tampered.tar.gz").ok).toBe(false);
    expect(subjectDigest(published.attestation)).not.toBe(
      createHash("sha256").update(tampered).digest("hex"),
    );
    expect(await readFile(join(published.dir, "capsule.tar.gz"))).toEqual(published.bundle);
  });

  it("sigstore-js rejects an attestation whose statement was altered", () => {
    const envelope = published.attestation.dsseEnvelope as { payload: string };
    const statement = JSON.parse(Buffer.from(envelope.payload, "base64").toString("utf8")) as {
      subject: { digest: { sha256: string } }[];
    };
    statement.subject[0]!.digest.sha256 = "0".repeat(64);
    const forged = {
      ...published.attestation,
      dsseEnvelope: { ...envelope, payload: Buffer.from(JSON.stringify(statement)).toString("base64") },
    };
    expect(() => sigstoreVerify(forged, published.pem)).toThrow();
  });
});
