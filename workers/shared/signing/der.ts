/**
 * ECDSA signature encodings. WebCrypto produces and expects raw r||s (64 bytes for P-256); openssl, cosign and
 * DSSE tooling use ASN.1 DER (SEQUENCE { INTEGER r, INTEGER s }).
 */

function trimInteger(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  // A leading 1 bit would read as negative: prefix a zero byte.
  if ((trimmed[0] ?? 0) & 0x80) {
    const padded = new Uint8Array(trimmed.length + 1);
    padded.set(trimmed, 1);
    return padded;
  }
  return trimmed;
}

/** Raw r||s to DER. */
export function rawToDer(raw: Uint8Array): Uint8Array {
  if (raw.length !== 64) throw new Error(`expected a 64-byte P-256 signature, got ${raw.length}`);
  const r = trimInteger(raw.subarray(0, 32));
  const s = trimInteger(raw.subarray(32));
  const body = new Uint8Array(2 + r.length + 2 + s.length);
  body.set([0x02, r.length], 0);
  body.set(r, 2);
  body.set([0x02, s.length], 2 + r.length);
  body.set(s, 4 + r.length);
  const der = new Uint8Array(2 + body.length);
  der.set([0x30, body.length], 0);
  der.set(body, 2);
  return der;
}

/** DER to raw r||s; returns null for anything that is not a well-formed P-256 ECDSA signature. */
export function derToRaw(der: Uint8Array): Uint8Array<ArrayBuffer> | null {
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) return null;
  const raw = new Uint8Array(64);
  let offset = 2;
  for (let part = 0; part < 2; part++) {
    if (der[offset] !== 0x02) return null;
    const length = der[offset + 1] ?? 0;
    let value = der.subarray(offset + 2, offset + 2 + length);
    if (value.length !== length || length === 0 || length > 33) return null;
    // DER integers are minimal and, for r and s, positive: no sign bit, no needless leading zero.
    if ((value[0] ?? 0) & 0x80) return null;
    if (value[0] === 0 && length > 1 && !((value[1] ?? 0) & 0x80)) return null;
    if (value[0] === 0 && length > 1) value = value.subarray(1);
    if (value.length > 32) return null;
    raw.set(value, part * 32 + (32 - value.length));
    offset += 2 + length;
  }
  return offset === der.length ? raw : null;
}
