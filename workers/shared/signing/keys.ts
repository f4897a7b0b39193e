import { fromBase64, toBase64, utf8 } from "../encoding";
import { derToRaw, rawToDer } from "./der";

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

/** A P-256 key pair loaded from a PKCS#8 PEM secret, with its published forms. */
export interface SigningKey {
  /** `SHA256:<base64>` fingerprint of the OpenSSH public key blob, as npm's registry keys use. */
  keyid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicPem: string;
  /** Base64 SPKI DER, the `key` field of an npm-style keys list. */
  publicSpki: string;
  publicJwk: JsonWebKey & { kid: string; alg: "ES256"; use: "sig" };
}

function pemBody(pem: string, label: string): Uint8Array<ArrayBuffer> {
  const match = pem.match(new RegExp(`-----BEGIN ${label}-----([\\s\\S]+?)-----END ${label}-----`));
  if (!match?.[1]) throw new Error(`not a ${label} PEM`);
  return fromBase64(match[1].replace(/\s+/g, ""));
}

function toPem(der: Uint8Array, label: string): string {
  const lines = toBase64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function sshString(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

/** OpenSSH-style fingerprint of an ecdsa-sha2-nistp256 key: `SHA256:` + unpadded base64 of sha256(blob). */
async function openSshFingerprint(x: Uint8Array, y: Uint8Array): Promise<string> {
  const point = new Uint8Array(65);
  point[0] = 0x04;
  point.set(x, 1);
  point.set(y, 33);
  const parts = [sshString(utf8("ecdsa-sha2-nistp256")), sshString(utf8("nistp256")), sshString(point)];
  const blob = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    blob.set(p, offset);
    offset += p.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", blob));
  return `SHA256:${toBase64(digest).replace(/=+$/, "")}`;
}

const loaded = new Map<string, Promise<SigningKey>>();

/** Imports a PKCS#8 PEM private key (non-extractable) and derives its public forms; cached per isolate. */
export function loadSigningKey(pem: string): Promise<SigningKey> {
  let key = loaded.get(pem);
  if (!key) {
    key = importSigningKey(pem);
    loaded.set(pem, key);
    key.catch(() => loaded.delete(pem));
  }
  return key;
}

async function importSigningKey(pem: string): Promise<SigningKey> {
  const pkcs8 = pemBody(pem, "PRIVATE KEY");
  // Export once to learn the public point, then keep only a non-extractable private key.
  const temp = await crypto.subtle.importKey("pkcs8", pkcs8, ECDSA, true, ["sign"]);
  const jwk = (await crypto.subtle.exportKey("jwk", temp)) as JsonWebKey;
  if (!jwk.x || !jwk.y) throw new Error("signing key has no public point");
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, ECDSA, false, ["sign"]);
  const publicJwkBase = { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
  const publicKey = await crypto.subtle.importKey("jwk", publicJwkBase, ECDSA, true, ["verify"]);
  const spki = new Uint8Array((await crypto.subtle.exportKey("spki", publicKey)) as ArrayBuffer);
  const keyid = await openSshFingerprint(
    fromBase64(jwk.x.replace(/-/g, "+").replace(/_/g, "/").padEnd(44, "=")),
    fromBase64(jwk.y.replace(/-/g, "+").replace(/_/g, "/").padEnd(44, "=")),
  );
  return {
    keyid,
    privateKey,
    publicKey,
    publicPem: toPem(spki, "PUBLIC KEY"),
    publicSpki: toBase64(spki),
    publicJwk: { ...publicJwkBase, kid: keyid, alg: "ES256", use: "sig" },
  };
}

/** Imports a public key from PEM (SPKI) for verification. */
export async function importPublicKeyPem(pem: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("spki", pemBody(pem, "PUBLIC KEY"), ECDSA, false, ["verify"]);
}

/** Signs bytes with ECDSA P-256/SHA-256 and returns the DER signature. */
export async function signDer(key: SigningKey, data: Uint8Array): Promise<Uint8Array> {
  const raw = new Uint8Array(
    await crypto.subtle.sign(ECDSA_SHA256, key.privateKey, data as Uint8Array<ArrayBuffer>),
  );
  return rawToDer(raw);
}

/** Verifies a DER ECDSA P-256/SHA-256 signature; malformed signatures verify as false. */
export async function verifyDer(publicKey: CryptoKey, data: Uint8Array, der: Uint8Array): Promise<boolean> {
  const raw = derToRaw(der);
  if (!raw) return false;
  return crypto.subtle.verify(ECDSA_SHA256, publicKey, raw, data as Uint8Array<ArrayBuffer>);
}
