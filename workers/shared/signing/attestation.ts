import { fromBase64, toBase64, utf8 } from "../encoding";
import { type SigningKey, signDer, verifyDer } from "./keys";

export const SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json";
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const PUBLISH_PREDICATE_TYPE = "https://soma.dev/attestation/publish/v1";

export interface InTotoStatement {
  _type: typeof IN_TOTO_STATEMENT_TYPE;
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: string;
  predicate: Record<string, unknown>;
}

export interface SigstoreBundle {
  mediaType: typeof SIGSTORE_BUNDLE_MEDIA_TYPE;
  verificationMaterial: {
    publicKey: { hint: string };
    tlogEntries: never[];
    timestampVerificationData: { rfc3161Timestamps: never[] };
  };
  dsseEnvelope: {
    payload: string;
    payloadType: string;
    signatures: { sig: string; keyid: string }[];
  };
}

/** DSSE pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(body)> <body>" (lengths in bytes). */
export function preAuthEncoding(payloadType: string, payload: Uint8Array): Uint8Array {
  const type = utf8(payloadType);
  const head = utf8(`DSSEv1 ${type.length} ${payloadType} ${payload.length} `);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/**
 * Signs an in-toto Statement as a DSSE envelope inside a Sigstore bundle v0.3 (public-key flavour, no
 * transparency log), the shape npm's publish attestations use and `@sigstore/verify` accepts.
 */
export async function createAttestation(
  key: SigningKey,
  statement: InTotoStatement,
): Promise<SigstoreBundle> {
  const payload = utf8(JSON.stringify(statement));
  const sig = await signDer(key, preAuthEncoding(IN_TOTO_PAYLOAD_TYPE, payload));
  return {
    mediaType: SIGSTORE_BUNDLE_MEDIA_TYPE,
    verificationMaterial: {
      publicKey: { hint: key.keyid },
      tlogEntries: [],
      timestampVerificationData: { rfc3161Timestamps: [] },
    },
    dsseEnvelope: {
      payload: toBase64(payload),
      payloadType: IN_TOTO_PAYLOAD_TYPE,
      signatures: [{ sig: toBase64(sig), keyid: key.keyid }],
    },
  };
}

/**
 * Verifies an attestation's envelope signature with the given key and returns its statement, or null.
 * Callers must still check the subject digest: a valid envelope says nothing about which artefact it covers.
 */
export async function openAttestation(
  bundle: SigstoreBundle,
  publicKey: CryptoKey,
): Promise<InTotoStatement | null> {
  const envelope = bundle.dsseEnvelope;
  const signature = envelope.signatures[0];
  if (!signature || envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE) return null;
  const payload = fromBase64(envelope.payload);
  const ok = await verifyDer(
    publicKey,
    preAuthEncoding(envelope.payloadType, payload),
    fromBase64(signature.sig),
  );
  if (!ok) return null;
  return JSON.parse(new TextDecoder().decode(payload)) as InTotoStatement;
}
