import { and, eq, isNull } from "drizzle-orm";
import type { Database } from "../db/client";
import { accounts, apiKeys } from "../db/schema";
import { timingSafeEqualText } from "../encoding";
import { AppError } from "../errors";
import { API_KEY_PREFIX, hashApiKey } from "./api-keys";
import type { Role } from "./roles";
import { type ApiKeyScope, FULL_ACCESS, scopesAllow, scopesFromStored } from "./scopes";
import { verifyAccessToken } from "./tokens";

/** Who is calling. The bootstrap admin token has no account, so it can administer but never publish. */
export interface Principal {
  accountId: string | null;
  handle: string | null;
  roles: Role[];
  via: "api_key" | "access_token" | "admin_token";
  /** What the credential may do (auth/scopes.ts); the admin token and unscoped keys have full access. */
  scopes: ApiKeyScope[];
}

interface PrincipalEnv {
  SOMA_ADMIN_TOKEN?: string;
  AUTH_SIGNING_KEY: string;
  PUBLIC_URL: string;
  ACCESS_TOKEN_TTL_SECONDS: string;
}

/** Looks up the account behind an API key; null when unknown or revoked. */
export async function principalFromApiKey(db: Database, key: string): Promise<Principal | null> {
  const [row] = await db
    .select({ id: accounts.id, handle: accounts.handle, roles: accounts.roles, scopes: apiKeys.scopes })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(and(eq(apiKeys.keyHash, await hashApiKey(key)), isNull(apiKeys.revokedAt)))
    .limit(1);
  if (!row) return null;
  return {
    accountId: row.id,
    handle: row.handle,
    roles: row.roles as Role[],
    via: "api_key",
    scopes: scopesFromStored(row.scopes),
  };
}

/**
 * Resolves `Authorization: Bearer <x>` where x is the bootstrap admin token, an API key or an access token.
 * A bearer that is present but not valid is an error, never an anonymous request.
 */
export async function resolvePrincipal(
  env: PrincipalEnv,
  db: Database,
  authorization: string | undefined,
): Promise<Principal | null> {
  if (!authorization) return null;
  const match = authorization.match(/^Bearer\s+(\S+)\s*$/i);
  if (!match?.[1]) {
    throw new AppError("UNAUTHENTICATED", "Authorization must be 'Bearer <API key or access token>'");
  }
  const token = match[1];
  if (
    env.SOMA_ADMIN_TOKEN &&
    env.SOMA_ADMIN_TOKEN.length >= 16 &&
    timingSafeEqualText(token, env.SOMA_ADMIN_TOKEN)
  ) {
    return { accountId: null, handle: null, roles: ["admin"], via: "admin_token", scopes: [...FULL_ACCESS] };
  }
  if (token.startsWith(API_KEY_PREFIX)) {
    const principal = await principalFromApiKey(db, token);
    if (!principal) throw new AppError("UNAUTHENTICATED", "The API key is unknown or revoked");
    return principal;
  }
  const claims = await verifyAccessToken(env, db, token);
  if (!claims) throw new AppError("UNAUTHENTICATED", "The access token is invalid or expired");
  return {
    accountId: claims.sub,
    handle: claims.handle,
    roles: claims.roles,
    via: "access_token",
    scopes: claims.scopes,
  };
}

/**
 * Refuses a request outside the caller's key scopes. Checked once per request, on the method and path, before
 * any route runs: a scoped key is held to its scopes on every route, guarded in middleware or in the handler.
 */
export function requireScope(principal: Principal | null, method: string, path: string): void {
  if (!principal || scopesAllow(principal.scopes, method, path)) return;
  throw new AppError(
    "FORBIDDEN",
    `This credential is limited to the ${principal.scopes.join(", ")} scope; ${method} ${path} is outside it`,
    { scopes: principal.scopes },
  );
}

/** The caller, or UNAUTHENTICATED. */
export function requirePrincipal(principal: Principal | null): Principal {
  if (!principal)
    throw new AppError("UNAUTHENTICATED", "Sign in: send Authorization: Bearer <API key or token>");
  return principal;
}

/** The caller with an account (the bootstrap admin token has none). */
export function requireAccount(
  principal: Principal | null,
): Principal & { accountId: string; handle: string } {
  const p = requirePrincipal(principal);
  if (!p.accountId || !p.handle) {
    throw new AppError("FORBIDDEN", "This action needs an account; the bootstrap admin token has none");
  }
  return p as Principal & { accountId: string; handle: string };
}

/** The caller, holding at least one of the roles. Admins hold every role. */
export function requireRole(principal: Principal | null, ...roles: Role[]): Principal {
  const p = requirePrincipal(principal);
  if (p.roles.includes("admin") || roles.some((r) => p.roles.includes(r))) return p;
  throw new AppError("FORBIDDEN", `This action needs the ${roles.join(" or ")} role`);
}
