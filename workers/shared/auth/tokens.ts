import { decodeProtectedHeader, importJWK, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import type { Database } from "../db/client";
import { loadSigningKey } from "../signing/keys";
import { ensureKeyRegistered, findKey, listKeys } from "../signing/registry";
import { roleSchema } from "./roles";

export const TOKEN_AUDIENCE = "soma-api";

const claimsSchema = z.object({
  sub: z.string().min(1),
  handle: z.string().min(1),
  roles: z.array(roleSchema),
});

export type AccessTokenClaims = z.output<typeof claimsSchema>;

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
  const expiresIn = Number(env.ACCESS_TOKEN_TTL_SECONDS) || 900;
  const token = await new SignJWT({ handle: claims.handle, roles: claims.roles })
    .setProtectedHeader({ alg: "ES256", kid: key.keyid, typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuer(env.PUBLIC_URL)
    .setAudience(TOKEN_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${expiresIn}s`)
    .sign(key.privateKey);
  return { token, expiresIn };
}

/**
 * Verifies an access token: ES256 only, our issuer and audience, unexpired, signed by the current key or a
 * registered earlier one (rotation by `kid`). Returns null for any token that does not pass.
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
    if (header.kid !== current.keyid) {
      const row = await findKey(db, header.kid);
      if (row?.purpose !== "auth") return null;
      publicKey = (await importJWK(row.publicJwk, "ES256")) as CryptoKey;
    }
    const { payload } = await jwtVerify(token, publicKey, {
      algorithms: ["ES256"],
      issuer: env.PUBLIC_URL,
      audience: TOKEN_AUDIENCE,
    });
    const claims = claimsSchema.safeParse(payload);
    return claims.success ? claims.data : null;
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
