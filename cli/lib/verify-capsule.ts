import { createHash, createPublicKey, type KeyObject, verify } from "node:crypto";
import { CliError } from "../errors.ts";
import { sha256Hex } from "./bundle.ts";
import { preAuthEncoding } from "./dsse.ts";

export const SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json";
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const PUBLISH_PREDICATE_TYPE = "https://soma.dev/attestation/publish/v1";
const KEY_TYPE = "ecdsa-sha2-nistp256";

/** One entry of `/.well-known/soma/keys.json` (the npm registry's keys list shape). */
export interface PublishedKey {
  keyid: string;
  keytype: string;
  scheme: string;
  /** Base64 SPKI DER. */
  key: string;
  expires: string | null;
}

export type TrustedKeys =
  | { source: "registry"; keys: PublishedKey[] }
  | { source: "pem"; pem: string; path: string };

export interface VerifyInput {
  name: string;
  version: string;
  bundle: Uint8Array;
  /** Contents of bundle.sig: base64 of a DER ECDSA signature. */
  signature: string;
  attestation: unknown;
  trusted: TrustedKeys;
}

export interface VerifyReport {
  name: string;
  version: string;
  sha256: string;
  size: number;
  keyid: string;
  keySource: string;
  publishedAt: string | null;
  checks: string[];
}

/** A verification that did not pass; the message says exactly what did not match. */
export class VerificationError extends CliError {
  constructor(message: string) {
    super(message, { code: "VERIFICATION_FAILED" });
    this.name = "VerificationError";
  }
}

function fail(message: string): never {
  throw new VerificationError(message);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function decodeBase64(text: string, what: string): Buffer {
  const compact = text.replace(/\s+/g, "");
  if (compact === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 !== 0) {
    fail(`${what} is not base64`);
  }
  return Buffer.from(compact, "base64");
}

function sshString(bytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** `SHA256:<unpadded base64>` of the OpenSSH ecdsa-sha2-nistp256 public key blob, as `ssh-keygen -l` prints. */
export function openSshFingerprint(key: KeyObject): string {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "P-256" || !jwk.x || !jwk.y) fail("The key is not an ECDSA P-256 public key");
  const point = Buffer.concat([
    Buffer.from([4]),
    Buffer.from(jwk.x, "base64url"),
    Buffer.from(jwk.y, "base64url"),
  ]);
  const blob = Buffer.concat([
    sshString(Buffer.from(KEY_TYPE)),
    sshString(Buffer.from("nistp256")),
    sshString(point),
  ]);
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

function requireP256(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    fail(`${what} is not an ECDSA P-256 public key`);
  }
  return key;
}

interface ChosenKey {
  key: KeyObject;
  keyid: string;
  expires: string | null;
  source: string;
}

function chooseKey(trusted: TrustedKeys, hint: string): ChosenKey {
  if (trusted.source === "pem") {
    let key: KeyObject;
    try {
      key = createPublicKey(trusted.pem);
    } catch (error) {
      fail(`${trusted.path} is not a PEM public key: ${(error as Error).message}`);
    }
    requireP256(key, trusted.path);
    return { key, keyid: openSshFingerprint(key), expires: null, source: trusted.path };
  }
  const entry = trusted.keys.find((k) => k.keyid === hint);
  if (!entry) {
    const known = trusted.keys.map((k) => k.keyid).join(", ") || "none";
    fail(`The attestation names key ${hint}, which the platform does not publish (published: ${known})`);
  }
  if (entry.keytype !== KEY_TYPE || entry.scheme !== KEY_TYPE) {
    fail(`Key ${entry.keyid} is ${entry.keytype}/${entry.scheme}; only ${KEY_TYPE} is supported`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({
      key: decodeBase64(entry.key, `Key ${entry.keyid}`),
      format: "der",
      type: "spki",
    });
  } catch (error) {
    if (error instanceof VerificationError) throw error;
    fail(`Key ${entry.keyid} is not a DER SPKI public key: ${(error as Error).message}`);
  }
  requireP256(key, `Key ${entry.keyid}`);
  const fingerprint = openSshFingerprint(key);
  if (fingerprint !== entry.keyid) {
    fail(`Key ${entry.keyid} is published under the wrong keyid: its fingerprint is ${fingerprint}`);
  }
  return { key, keyid: entry.keyid, expires: entry.expires, source: "/.well-known/soma/keys.json" };
}

function verifyDer(key: KeyObject, data: Uint8Array, signature: Buffer): boolean {
  try {
    return verify("sha256", data, { key, dsaEncoding: "der" }, signature);
  } catch {
    return false;
  }
}

/**
 * Verifies a published capsule from its exact bytes, without trusting the platform's own checks: the blob
 * signature, the DSSE envelope signature, the in-toto statement's binding to these bytes, and the key's expiry.
 * Returns what was checked, or throws VerificationError naming the first mismatch.
 */
export function verifyCapsule(input: VerifyInput): VerifyReport {
  const attestation = input.attestation;
  if (!isRecord(attestation)) fail("The attestation is not a JSON object");
  if (attestation.mediaType !== SIGSTORE_BUNDLE_MEDIA_TYPE) {
    fail(
      `The attestation's mediaType is ${JSON.stringify(attestation.mediaType)}, expected ${SIGSTORE_BUNDLE_MEDIA_TYPE}`,
    );
  }
  const material = attestation.verificationMaterial;
  const publicKeyRef = isRecord(material) ? material.publicKey : undefined;
  const hint = isRecord(publicKeyRef) ? publicKeyRef.hint : undefined;
  if (typeof hint !== "string" || hint === "")
    fail("The attestation has no verificationMaterial.publicKey.hint");

  const chosen = chooseKey(input.trusted, hint);
  const checks: string[] = [`key ${chosen.keyid} (from ${chosen.source})`];

  const digest = sha256Hex(input.bundle);
  const bundleSignature = decodeBase64(input.signature, "bundle.sig");
  if (!verifyDer(chosen.key, input.bundle, bundleSignature)) {
    const named = chosen.keyid === hint ? "" : `; the attestation names key ${hint}`;
    fail(
      `The bundle signature (bundle.sig) does not verify with key ${chosen.keyid} from ${chosen.source} over the downloaded bundle (sha256 ${digest})${named}`,
    );
  }
  checks.push(`bundle signature: ECDSA P-256 SHA-256 over ${input.bundle.length} bytes verifies`);

  const envelope = attestation.dsseEnvelope;
  if (!isRecord(envelope)) fail("The attestation has no dsseEnvelope");
  if (envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE) {
    fail(`The DSSE payloadType is ${JSON.stringify(envelope.payloadType)}, expected ${IN_TOTO_PAYLOAD_TYPE}`);
  }
  if (typeof envelope.payload !== "string") fail("The DSSE envelope has no payload");
  const payload = decodeBase64(envelope.payload, "The DSSE payload");
  const signatures = Array.isArray(envelope.signatures) ? envelope.signatures.filter(isRecord) : [];
  const candidates = signatures.filter((s) => s.keyid === undefined || s.keyid === "" || s.keyid === hint);
  if (candidates.length === 0) fail(`The DSSE envelope has no signature by key ${hint}`);
  const pae = preAuthEncoding(IN_TOTO_PAYLOAD_TYPE, payload);
  const envelopeOk = candidates.some(
    (s) => typeof s.sig === "string" && verifyDer(chosen.key, pae, decodeBase64(s.sig, "The DSSE signature")),
  );
  if (!envelopeOk) fail(`The DSSE envelope signature does not verify with key ${chosen.keyid}`);
  checks.push("attestation: DSSE signature over the pre-authentication encoding verifies");

  let statement: unknown;
  try {
    statement = JSON.parse(payload.toString("utf8"));
  } catch {
    fail("The DSSE payload is not JSON");
  }
  if (!isRecord(statement)) fail("The in-toto statement is not a JSON object");
  if (statement._type !== IN_TOTO_STATEMENT_TYPE) {
    fail(`The statement _type is ${JSON.stringify(statement._type)}, expected ${IN_TOTO_STATEMENT_TYPE}`);
  }
  const subject = Array.isArray(statement.subject) ? statement.subject[0] : undefined;
  const subjectDigest = isRecord(subject) && isRecord(subject.digest) ? subject.digest.sha256 : undefined;
  if (subjectDigest !== digest) {
    fail(
      `The statement's subject digest is ${String(subjectDigest)}, but the downloaded bundle's sha256 is ${digest}`,
    );
  }
  if (statement.predicateType !== PUBLISH_PREDICATE_TYPE) {
    fail(
      `The predicateType is ${JSON.stringify(statement.predicateType)}, expected ${PUBLISH_PREDICATE_TYPE}`,
    );
  }
  const predicate = isRecord(statement.predicate) ? statement.predicate : {};
  const capsule = isRecord(predicate.capsule) ? predicate.capsule : {};
  if (capsule.name !== input.name || capsule.version !== input.version) {
    fail(
      `The attestation is for ${String(capsule.name)}@${String(capsule.version)}, not ${input.name}@${input.version}`,
    );
  }
  checks.push(`statement: in-toto v1, subject sha256 ${digest} matches, predicate ${PUBLISH_PREDICATE_TYPE}`);

  const publishedAt = typeof predicate.publishedAt === "string" ? predicate.publishedAt : null;
  if (chosen.expires !== null) {
    const expires = Date.parse(chosen.expires);
    const published = publishedAt === null ? Number.NaN : Date.parse(publishedAt);
    if (Number.isNaN(expires))
      fail(`Key ${chosen.keyid} has an unreadable expiry ${JSON.stringify(chosen.expires)}`);
    if (Number.isNaN(published))
      fail(`Key ${chosen.keyid} expires, but the statement has no readable publishedAt`);
    if (published >= expires) {
      fail(
        `The capsule was published at ${publishedAt}, after key ${chosen.keyid} expired at ${chosen.expires}`,
      );
    }
    checks.push(`key expiry: published ${publishedAt} before the key expired at ${chosen.expires}`);
  } else {
    checks.push("key expiry: the key has no expiry");
  }

  return {
    name: input.name,
    version: input.version,
    sha256: digest,
    size: input.bundle.length,
    keyid: chosen.keyid,
    keySource: chosen.source,
    publishedAt,
    checks,
  };
}
