import { describe, expect, it } from "vitest";
import { fromBase64, toBase64 } from "../../workers/shared/encoding";
import { derToRaw, rawToDer } from "../../workers/shared/signing/der";
import { importPublicKeyPem, loadSigningKey, signDer, verifyDer } from "../../workers/shared/signing/keys";

interface NodeCrypto {
  verify(
    algorithm: "sha256",
    data: Uint8Array,
    key: { key: string | Uint8Array; format?: "der"; type?: "spki"; dsaEncoding: "der" },
    signature: Uint8Array,
  ): boolean;
}

// node:crypto (BoringSSL inside workerd, via nodejs_compat) is an independent DER verifier. The test tsconfig
// has no Node types, so the module is loaded by a computed name and typed here for the one call used.
const NODE_CRYPTO = "node:crypto";
const { verify: nodeVerify } = (await import(NODE_CRYPTO)) as NodeCrypto;

const ECDSA = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

/** A fresh extractable P-256 key as PKCS#8 PEM, the form the Worker secret takes. */
async function generatePem(): Promise<string> {
  const pair = (await crypto.subtle.generateKey(ECDSA, true, ["sign", "verify"])) as CryptoKeyPair;
  const pkcs8 = new Uint8Array((await crypto.subtle.exportKey("pkcs8", pair.privateKey)) as ArrayBuffer);
  const lines = toBase64(pkcs8).match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join("\n")}\n-----END PRIVATE KEY-----\n`;
}

function raw(r: number[] | Uint8Array, s: number[] | Uint8Array): Uint8Array {
  const out = new Uint8Array(64);
  out.set(r, 32 - r.length);
  out.set(s, 64 - s.length);
  return out;
}

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

/** Random r||s with the shapes that trip DER encoders: high bit set, leading zero bytes, or both. */
function awkwardSignature(): Uint8Array {
  const sig = crypto.getRandomValues(new Uint8Array(64));
  for (const half of [0, 32]) {
    const shape = Math.floor(Math.random() * 4);
    if (shape === 1) sig[half] = (sig[half] ?? 0) | 0x80;
    if (shape === 2) sig.fill(0, half, half + 1 + Math.floor(Math.random() * 3));
    if (shape === 3) {
      sig[half] = 0;
      sig[half + 1] = (sig[half + 1] ?? 0) | 0x80;
    }
  }
  return sig;
}

/** Reads SEQUENCE { INTEGER, INTEGER } strictly, to check the encoder's output shape independently. */
function readDerIntegers(der: Uint8Array): Uint8Array[] {
  expect(der[0]).toBe(0x30);
  expect(der[1]).toBe(der.length - 2);
  const ints: Uint8Array[] = [];
  let offset = 2;
  while (offset < der.length) {
    expect(der[offset]).toBe(0x02);
    const length = der[offset + 1] ?? 0;
    const value = der.subarray(offset + 2, offset + 2 + length);
    expect(value.length).toBe(length);
    // Minimal two's-complement: positive, and no redundant leading zero.
    expect((value[0] ?? 0) & 0x80).toBe(0);
    if (value.length > 1 && value[0] === 0) expect((value[1] ?? 0) & 0x80).toBe(0x80);
    ints.push(value);
    offset += 2 + length;
  }
  expect(ints).toHaveLength(2);
  return ints;
}

describe("rawToDer / derToRaw", () => {
  it("round-trips random signatures with high bits and leading zeros, producing minimal DER", () => {
    for (let i = 0; i < 500; i++) {
      const sig = awkwardSignature();
      const der = rawToDer(sig);
      expect(der.length).toBeLessThanOrEqual(72);
      readDerIntegers(der);
      expect(derToRaw(der)).toEqual(sig);
    }
  });

  it("pads an integer whose high bit is set with one zero byte", () => {
    const der = rawToDer(raw(filled(32, 0xff), filled(32, 0x80)));
    const [r, s] = readDerIntegers(der);
    expect(r?.length).toBe(33);
    expect(s?.length).toBe(33);
    expect(der.length).toBe(72);
  });

  it("strips leading zero bytes", () => {
    const der = rawToDer(raw([0x01, 0x02], [0x7f]));
    expect(Array.from(der)).toEqual([0x30, 0x07, 0x02, 0x02, 0x01, 0x02, 0x02, 0x01, 0x7f]);
    expect(derToRaw(der)).toEqual(raw([0x01, 0x02], [0x7f]));
  });

  it("encodes a zero integer as a single zero byte", () => {
    const der = rawToDer(new Uint8Array(64));
    expect(Array.from(der)).toEqual([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    expect(derToRaw(der)).toEqual(new Uint8Array(64));
  });

  it("refuses a raw signature that is not 64 bytes", () => {
    expect(() => rawToDer(new Uint8Array(63))).toThrow(/64-byte/);
    expect(() => rawToDer(new Uint8Array(65))).toThrow(/64-byte/);
  });

  it("matches the DER WebCrypto signatures verify under node:crypto's dsaEncoding der", async () => {
    const pair = (await crypto.subtle.generateKey(ECDSA, true, ["sign", "verify"])) as CryptoKeyPair;
    const spki = new Uint8Array((await crypto.subtle.exportKey("spki", pair.publicKey)) as ArrayBuffer);
    const publicKey = { key: spki, format: "der", type: "spki", dsaEncoding: "der" } as const;
    for (let i = 0; i < 20; i++) {
      const data = crypto.getRandomValues(new Uint8Array(100));
      const sig = new Uint8Array(await crypto.subtle.sign(ECDSA_SHA256, pair.privateKey, data));
      const der = rawToDer(sig);
      expect(nodeVerify("sha256", data, publicKey, der)).toBe(true);
    }
  });

  const good = rawToDer(raw(filled(32, 0x11), filled(32, 0x22)));
  const malformed: [string, Uint8Array][] = [
    ["empty input", new Uint8Array(0)],
    ["a raw 64-byte signature", raw(filled(32, 0x11), filled(32, 0x22))],
    ["a wrong outer tag", Uint8Array.from([0x31, ...good.subarray(1)])],
    ["an outer length that is too long", Uint8Array.from([0x30, good.length - 1, ...good.subarray(2)])],
    ["an outer length that is too short", Uint8Array.from([0x30, good.length - 3, ...good.subarray(2)])],
    ["truncated input", good.subarray(0, good.length - 1)],
    ["trailing bytes inside the sequence", Uint8Array.from([0x30, good.length, ...good.subarray(2), 0x00])],
    [
      "a first element that is not an INTEGER",
      Uint8Array.from([0x30, 0x06, 0x04, 0x01, 0x01, 0x02, 0x01, 0x01]),
    ],
    [
      "a second element that is not an INTEGER",
      Uint8Array.from([0x30, 0x06, 0x02, 0x01, 0x01, 0x05, 0x01, 0x01]),
    ],
    ["a zero-length INTEGER", Uint8Array.from([0x30, 0x06, 0x02, 0x00, 0x02, 0x02, 0x01, 0x01])],
    ["an INTEGER longer than the input", Uint8Array.from([0x30, 0x06, 0x02, 0x09, 0x01, 0x02, 0x01, 0x01])],
    [
      "a 33-byte INTEGER without a leading zero",
      Uint8Array.from([0x30, 0x26, 0x02, 0x21, ...filled(33, 0x01), 0x02, 0x01, 0x01]),
    ],
    ["three INTEGERs", Uint8Array.from([0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])],
    ["one INTEGER", Uint8Array.from([0x30, 0x06, 0x02, 0x04, 0x01, 0x02, 0x03, 0x04])],
  ];

  it.each(malformed)("returns null for %s", (_label, der) => {
    expect(derToRaw(der)).toBeNull();
  });

  // DER integers are minimal two's complement (X.690 8.3.2), and ECDSA's r and s are positive. derToRaw accepts
  // both forms below, so one signature has several accepted encodings; openssl rejects them.
  it("returns null for an INTEGER encoded as negative (high bit set without a zero pad)", () => {
    expect(derToRaw(Uint8Array.from([0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01]))).toBeNull();
  });

  it("returns null for an INTEGER with a redundant leading zero byte", () => {
    expect(derToRaw(Uint8Array.from([0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01]))).toBeNull();
  });
});

describe("signing keys", () => {
  it("signs and verifies with a key loaded from PKCS#8 PEM", async () => {
    const key = await loadSigningKey(await generatePem());
    const data = new TextEncoder().encode("capsule tarball bytes");
    const der = await signDer(key, data);
    expect(der[0]).toBe(0x30);
    expect(await verifyDer(key.publicKey, data, der)).toBe(true);
    expect(await verifyDer(await importPublicKeyPem(key.publicPem), data, der)).toBe(true);
  });

  it("rejects a signature over other data, a tampered signature and garbage", async () => {
    const key = await loadSigningKey(await generatePem());
    const data = new TextEncoder().encode("capsule tarball bytes");
    const der = await signDer(key, data);
    expect(await verifyDer(key.publicKey, new TextEncoder().encode("capsule tarball bytez"), der)).toBe(
      false,
    );
    const tampered = der.slice();
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    expect(await verifyDer(key.publicKey, data, tampered)).toBe(false);
    expect(await verifyDer(key.publicKey, data, new Uint8Array([1, 2, 3]))).toBe(false);
  });

  it("does not verify a signature made with another key", async () => {
    const [a, b] = await Promise.all([
      loadSigningKey(await generatePem()),
      loadSigningKey(await generatePem()),
    ]);
    const data = new TextEncoder().encode("payload");
    expect(await verifyDer(b.publicKey, data, await signDer(a, data))).toBe(false);
  });

  it("produces DER that node:crypto verifies with the published PEM", async () => {
    const key = await loadSigningKey(await generatePem());
    const data = crypto.getRandomValues(new Uint8Array(256));
    const der = await signDer(key, data);
    expect(nodeVerify("sha256", data, { key: key.publicPem, dsaEncoding: "der" }, der)).toBe(true);
    data[0] = (data[0] ?? 0) ^ 0x01;
    expect(nodeVerify("sha256", data, { key: key.publicPem, dsaEncoding: "der" }, der)).toBe(false);
  });

  // openssl (and node:crypto) refuse this encoding, so the platform must too: one signature, one encoding.
  it("refuses a genuine signature re-encoded with a redundant leading zero in r", async () => {
    const key = await loadSigningKey(await generatePem());
    const data = new TextEncoder().encode("payload");
    const der = await signDer(key, data);
    const rLength = der[3] ?? 0;
    const body = [0x02, rLength + 1, 0x00, ...der.subarray(4, 4 + rLength), ...der.subarray(4 + rLength)];
    const padded = Uint8Array.from([0x30, body.length, ...body]);
    expect(nodeVerify("sha256", data, { key: key.publicPem, dsaEncoding: "der" }, padded)).toBe(false);
    expect(await verifyDer(key.publicKey, data, padded)).toBe(false);
  });

  it("keeps the private key non-extractable", async () => {
    const key = await loadSigningKey(await generatePem());
    expect(key.privateKey.extractable).toBe(false);
    await expect(crypto.subtle.exportKey("pkcs8", key.privateKey)).rejects.toThrow();
  });

  it("names the key SHA256: plus 43 base64 characters, the OpenSSH fingerprint of its public point", async () => {
    const key = await loadSigningKey(await generatePem());
    expect(key.keyid).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(key.publicJwk).toMatchObject({
      kty: "EC",
      crv: "P-256",
      kid: key.keyid,
      alg: "ES256",
      use: "sig",
    });

    // Rebuild the OpenSSH key blob from the SPKI point (the last 65 bytes) rather than from the JWK.
    const point = fromBase64(key.publicSpki).subarray(-65);
    expect(point[0]).toBe(0x04);
    const field = (bytes: Uint8Array) => [0, 0, (bytes.length >> 8) & 0xff, bytes.length & 0xff, ...bytes];
    const text = (s: string) => new TextEncoder().encode(s);
    const blob = Uint8Array.from([
      ...field(text("ecdsa-sha2-nistp256")),
      ...field(text("nistp256")),
      ...field(point),
    ]);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", blob));
    expect(key.keyid).toBe(`SHA256:${toBase64(digest).replace(/=+$/, "")}`);
  });

  it("gives different keys different keyids and one key the same keyid", async () => {
    const pem = await generatePem();
    const [a, b, c] = await Promise.all([
      loadSigningKey(pem),
      loadSigningKey(pem),
      loadSigningKey(await generatePem()),
    ]);
    expect(a.keyid).toBe(b.keyid);
    expect(a.keyid).not.toBe(c.keyid);
  });

  it("publishes a PEM public key that round-trips to the same SPKI", async () => {
    const key = await loadSigningKey(await generatePem());
    expect(key.publicPem).toMatch(
      /^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+\n-----END PUBLIC KEY-----\n$/,
    );
    const imported = await crypto.subtle.importKey("spki", fromBase64(key.publicSpki), ECDSA, true, [
      "verify",
    ]);
    const reexported = new Uint8Array((await crypto.subtle.exportKey("spki", imported)) as ArrayBuffer);
    expect(toBase64(reexported)).toBe(key.publicSpki);
  });

  it("refuses a PEM that is not a private key", async () => {
    const key = await loadSigningKey(await generatePem());
    await expect(loadSigningKey(key.publicPem)).rejects.toThrow(/PRIVATE KEY/);
  });
});
