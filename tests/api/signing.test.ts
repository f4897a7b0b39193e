import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { database } from "../../workers/shared/db/client";
import { fromBase64, sha256Hex } from "../../workers/shared/encoding";
import {
  openAttestation,
  preAuthEncoding,
  type SigstoreBundle,
} from "../../workers/shared/signing/attestation";
import { importPublicKeyPem, loadSigningKey, verifyDer } from "../../workers/shared/signing/keys";
import { ensureKeyRegistered } from "../../workers/shared/signing/registry";
import { api, publish, signup } from "../helpers";

async function published() {
  const author = await signup();
  const dep = await publish(author.apiKey, { name: `${author.handle}/dep`, version: "2.1.0" });
  const sub = await publish(author.apiKey, {
    name: `${author.handle}/signed`,
    dependencies: { [dep.name]: "^2.0.0" },
  });
  const base = `/v1/capsules/${sub.name}/versions/${sub.version}`;
  const bundle = new Uint8Array(await (await api(`${base}/bundle`)).arrayBuffer());
  const sig = fromBase64((await (await api(`${base}/bundle.sig`)).text()).trim());
  const attestation = (await (await api(`${base}/attestation`)).json()) as SigstoreBundle;
  const sbom = (await (await api(`${base}/sbom`)).json()) as Record<string, unknown>;
  const pem = await (await api("/.well-known/soma/signing-key.pem")).text();
  return { author, sub, dep, bundle, sig, attestation, sbom, publicKey: await importPublicKeyPem(pem) };
}

describe("published evidence", () => {
  it("serves the exact bytes with a DER signature the published key verifies", async () => {
    const { bundle, sig, publicKey } = await published();
    expect(sig[0]).toBe(0x30);
    expect(await verifyDer(publicKey, bundle, sig)).toBe(true);
    const tampered = bundle.slice();
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    expect(await verifyDer(publicKey, tampered, sig)).toBe(false);
  });

  it("attests the bundle digest, the SBOM digest and the review in a signed in-toto statement", async () => {
    const { bundle, attestation, publicKey, author, sub } = await published();
    expect(attestation.mediaType).toBe("application/vnd.dev.sigstore.bundle.v0.3+json");
    const statement = await openAttestation(attestation, publicKey);
    expect(statement?._type).toBe("https://in-toto.io/Statement/v1");
    expect(statement?.subject[0]?.digest.sha256).toBe(await sha256Hex(bundle));
    expect(statement?.subject[0]?.name).toBe(`pkg:soma/${sub.name}@${sub.version}`);
    const predicate = statement?.predicate as {
      submitter: { handle: string };
      review: { mode: string; decision: string };
      sbom: { sha256: string };
    };
    expect(predicate.submitter.handle).toBe(author.handle);
    expect(predicate.review).toMatchObject({ mode: "automatic", decision: "approve" });
    const sbomText = await (await api(`/v1/capsules/${sub.name}/versions/${sub.version}/sbom`)).text();
    expect(predicate.sbom.sha256).toBe(await sha256Hex(sbomText));
    // The DSSE signature covers the PAE bytes, not the bare payload.
    const payload = fromBase64(attestation.dsseEnvelope.payload);
    const sig = fromBase64(attestation.dsseEnvelope.signatures[0]!.sig);
    expect(await verifyDer(publicKey, preAuthEncoding("application/vnd.in-toto+json", payload), sig)).toBe(
      true,
    );
    expect(await verifyDer(publicKey, payload, sig)).toBe(false);
  });

  it("lists every file with its sha256 and the dependencies with their resolved ranges in the SBOM", async () => {
    const { sbom, dep } = await published();
    expect(sbom).toMatchObject({ bomFormat: "CycloneDX", specVersion: "1.5" });
    const components = sbom.components as {
      type: string;
      name: string;
      hashes?: { content: string }[];
      properties?: { name: string; value: string }[];
    }[];
    const files = components.filter((c) => c.type === "file").map((c) => c.name);
    expect(files).toEqual(["capsule.yaml", "dist/main.js"]);
    expect(components.find((c) => c.name === "capsule.yaml")?.hashes?.[0]?.content).toMatch(/^[a-f0-9]{64}$/);
    const depComponent = components.find((c) => c.name === dep.name);
    expect(depComponent?.properties).toEqual([
      { name: "soma:versionRange", value: "^2.0.0" },
      { name: "soma:resolvedVersion", value: "2.1.0" },
    ]);
  });

  it("publishes keys as PEM, npm-style keys.json and keeps old keys verifiable after rotation", async () => {
    const before = await published();
    const keys = (await (await api("/.well-known/soma/keys.json")).json()) as {
      keys: { keyid: string; key: string; expires: string | null; keytype: string }[];
    };
    const current = await loadSigningKey(env.CAPSULE_SIGNING_KEY);
    expect(keys.keys).toEqual([
      expect.objectContaining({ keyid: current.keyid, expires: null, keytype: "ecdsa-sha2-nistp256" }),
    ]);
    expect(before.attestation.verificationMaterial.publicKey.hint).toBe(current.keyid);

    // Rotate: register a newer key of the same purpose, as a redeploy with a new secret does.
    const next = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    const pkcs8 = new Uint8Array((await crypto.subtle.exportKey("pkcs8", next.privateKey)) as ArrayBuffer);
    const pem = `-----BEGIN PRIVATE KEY-----\n${btoa(String.fromCharCode(...pkcs8))}\n-----END PRIVATE KEY-----\n`;
    const rotated = await loadSigningKey(pem);
    await ensureKeyRegistered(database(env.DB), rotated, "capsules");
    const after = (await (await api("/.well-known/soma/keys.json")).json()) as typeof keys;
    const old = after.keys.find((k) => k.keyid === current.keyid);
    expect(old?.expires).not.toBeNull();
    expect(after.keys.find((k) => k.keyid === rotated.keyid)?.expires).toBeNull();
    const oldKey = await crypto.subtle.importKey(
      "spki",
      fromBase64(old!.key),
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    expect(await verifyDer(oldKey, before.bundle, before.sig)).toBe(true);
  });

  it("answers 404 for artefacts of unknown versions and 400 for malformed versions", async () => {
    const author = await signup();
    expect((await api(`/v1/capsules/${author.handle}/none/versions/1.0.0/bundle`)).status).toBe(404);
    expect((await api(`/v1/capsules/${author.handle}/none/versions/latest/bundle`)).status).toBe(400);
  });

  it("serves the capsule manifest JSON Schema", async () => {
    const res = await api("/v1/schemas/capsule.json");
    expect(res.status).toBe(200);
    const schema = (await res.json()) as { properties: Record<string, unknown>; $id: string };
    expect(Object.keys(schema.properties)).toEqual(["apiVersion", "kind", "metadata", "spec"]);
  });
});
