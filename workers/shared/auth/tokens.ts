import { decodeProtectedHeader, importJWK, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { recordAudit } from "../audit/log";
import type { Database } from "../db/client";
import { loadSigningKey } from "../signing/keys";
import { ensureKeyRegistered, findKey, listKeys } from "../signing/registry";
import { roleSchema } from "./roles";
import { type ApiKeyScope, FULL_ACCESS, scopeClaim, scopesFromClaim } from "./scopes";

export const TOKEN_AUDIENCE = "soma-api";

const claimsSchema = z.object({
  sub: z.string().min(1),
  handle: z.string().min(1),
  roles: z.array(roleSchema),
  scope: z.string().max(200).optional(),
});

export interface AccessTokenClaims {
  sub: string;
  handle: string;
  roles: z.output<typeof roleSchema>[];
  /** The scopes of the API key the token was exchanged for. */
  scopes: ApiKeyScope[];
}

// Allowed clock difference between the signer and a verifier, for `exp`, `iat` and key retirement.
const CLOCK_SKEW_SECONDS = 60;

function ttlSeconds(env: TokenEnv): number {
  return Number(env.ACCESS_TOKEN_TTL_SECONDS) || 900;
}

interface TokenEnv {
  AUTH_SIGNING_KEY: string;
  PUBLIC_URL: string;
  ACCESS_TOKEN_TTL_SECONDS: string;
}

/** Issues a short-lived ES256 access token for an account. */
export async function issueAccessToken(
  env: TokenEnv,
  db: Database,
  claims: AccessTokenClaims,
): Promise<{ token: string; expiresIn: number }> {
  const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
  await ensureKeyRegistered(db, key, "auth");
  const expiresIn = ttlSeconds(env);
  const token = await new SignJWT({
    handle: claims.handle,
    roles: claims.roles,
    scope: scopeClaim(claims.scopes),
  })
    .setProtectedHeader({ alg: "ES256", kid: key.keyid, typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuer(env.PUBLIC_URL)
    .setAudience(TOKEN_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${expiresIn}s`)
    .sign(key.privateKey);
  await recordAudit(db, {
    actor: { accountId: claims.sub },
    action: "auth.token_issued",
    target: `account:${claims.sub}`,
    details: { kid: key.keyid, scopes: claims.scopes, expiresIn },
  });
  return { token, expiresIn };
}

/**
 * Verifies an access token: ES256 only, our issuer and audience, unexpired, issued no longer ago than the token
 * lifetime, signed by the current key or a published earlier one (rotation by `kid`). A retired key only
 * vouches for tokens issued before it was retired, so it stops mattering one lifetime after rotation even if it
 * leaks. Returns null for any token that does not pass.
 */
export async function verifyAccessToken(
  env: TokenEnv,
  db: Database,
  token: string,
): Promise<AccessTokenClaims | null> {
  try {
    const header = decodeProtectedHeader(token);
    if (header.alg !== "ES256" || typeof header.kid !== "string") return null;
    const current = await loadSigningKey(env.AUTH_SIGNING_KEY);
    let publicKey: CryptoKey | Uint8Array = current.publicKey;
    let retiredAt: number | null = null;
    if (header.kid !== current.keyid) {
      const row = await findKey(db, header.kid);
      if (row?.purpose !== "auth") return null;
      publicKey = (await importJWK(row.publicJwk, "ES256")) as CryptoKey;
      retiredAt = row.expiresAt ? Date.parse(row.expiresAt) / 1000 : null;
    }
    const { payload } = await jwtVerify(token, publicKey, {
      algorithms: ["ES256"],
      issuer: env.PUBLIC_URL,
      audience: TOKEN_AUDIENCE,
      requiredClaims: ["sub", "iat", "exp"],
      maxTokenAge: ttlSeconds(env) + CLOCK_SKEW_SECONDS,
      clockTolerance: CLOCK_SKEW_SECONDS,
    });
    if (retiredAt !== null && (payload.iat ?? Number.POSITIVE_INFINITY) > retiredAt + CLOCK_SKEW_SECONDS) {
      return null;
    }
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) return null;
    const scopes = claims.data.scope === undefined ? [...FULL_ACCESS] : scopesFromClaim(claims.data.scope);
    if (!scopes) return null;
    return { sub: claims.data.sub, handle: claims.data.handle, roles: claims.data.roles, scopes };
  } catch {
    return null;
  }
}

/** The JWKS of every auth key, current and retired, so tokens verify across rotation. */
export async function authJwks(env: TokenEnv, db: Database): Promise<{ keys: JsonWebKey[] }> {
  const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
  await ensureKeyRegistered(db, key, "auth");
  const rows = await listKeys(db, "auth");
  return { keys: rows.map((row) => row.publicJwk) };
}
