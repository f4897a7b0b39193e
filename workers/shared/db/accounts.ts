import { and, eq, isNull } from "drizzle-orm";
import { generateApiKey, hashApiKey } from "../auth/api-keys";
import type { Role } from "../auth/roles";
import { type ApiKeyScope, scopesFromStored } from "../auth/scopes";
import { AppError } from "../errors";
import { type Database, isUniqueViolation, newId, nowIso } from "./client";
import { accounts, apiKeys } from "./schema";

export interface AccountView {
  id: string;
  handle: string;
  email: string;
  roles: Role[];
  createdAt: string;
}

function view(row: typeof accounts.$inferSelect): AccountView {
  return {
    id: row.id,
    handle: row.handle,
    email: row.email,
    roles: row.roles as Role[],
    createdAt: row.createdAt,
  };
}

/** Creates an account and its first API key in one batch; the key is returned once and stored hashed. */
export async function createAccount(
  db: Database,
  input: { handle: string; email: string },
): Promise<{ account: AccountView; apiKey: string }> {
  const apiKey = generateApiKey();
  const row = {
    id: newId("acc"),
    handle: input.handle,
    email: input.email.toLowerCase(),
    roles: ["user"],
    createdAt: nowIso(),
  };
  try {
    await db.batch([
      db.insert(accounts).values(row),
      db.insert(apiKeys).values({
        id: newId("key"),
        accountId: row.id,
        keyHash: await hashApiKey(apiKey),
        prefix: apiKey.slice(0, 12),
        createdAt: row.createdAt,
      }),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new AppError("CONFLICT", "That handle or email is already registered", {
        fields: ["handle", "email"],
      });
    }
    throw error;
  }
  return { account: view(row), apiKey };
}

export async function findAccountByHandle(db: Database, handle: string): Promise<AccountView | null> {
  const [row] = await db.select().from(accounts).where(eq(accounts.handle, handle)).limit(1);
  return row ? view(row) : null;
}

export async function findAccountById(db: Database, id: string): Promise<AccountView | null> {
  const [row] = await db.select().from(accounts).where(eq(accounts.id, id)).limit(1);
  return row ? view(row) : null;
}

/** Replaces an account's roles; `user` is always kept. */
export async function setRoles(db: Database, handle: string, roles: Role[]): Promise<AccountView> {
  const next = Array.from(new Set<Role>(["user", ...roles]));
  const [row] = await db.update(accounts).set({ roles: next }).where(eq(accounts.handle, handle)).returning();
  if (!row) throw new AppError("NOT_FOUND", `No account with handle "${handle}"`);
  return view(row);
}

export interface ApiKeyView {
  id: string;
  prefix: string;
  scopes: ApiKeyScope[];
  createdAt: string;
  revokedAt: string | null;
}

function keyView(row: typeof apiKeys.$inferSelect): ApiKeyView {
  return {
    id: row.id,
    prefix: row.prefix,
    scopes: scopesFromStored(row.scopes),
    createdAt: row.createdAt,
    revokedAt: row.revokedAt,
  };
}

/** Issues another API key for an account (shown once, stored hashed), limited to `scopes` when given. */
export async function createApiKey(
  db: Database,
  accountId: string,
  scopes?: ApiKeyScope[],
): Promise<{ key: ApiKeyView; apiKey: string }> {
  const apiKey = generateApiKey();
  const distinct = scopes ? [...new Set(scopes)] : null;
  const row = {
    id: newId("key"),
    accountId,
    keyHash: await hashApiKey(apiKey),
    prefix: apiKey.slice(0, 12),
    createdAt: nowIso(),
    revokedAt: null,
    // A key with full among its scopes is a full key: store it as one.
    scopes: distinct && !distinct.includes("full") ? distinct : null,
  };
  await db.insert(apiKeys).values(row);
  return { key: keyView(row), apiKey };
}

export async function listApiKeys(db: Database, accountId: string): Promise<ApiKeyView[]> {
  const rows = await db
    .select()
    .from(apiKeys)
    .where(eq(apiKeys.accountId, accountId))
    .orderBy(apiKeys.createdAt);
  return rows.map(keyView);
}

/** Revokes one of an account's keys; it stops authenticating at once. */
export async function revokeApiKey(db: Database, accountId: string, keyId: string): Promise<void> {
  const [row] = await db
    .update(apiKeys)
    .set({ revokedAt: nowIso() })
    .where(and(eq(apiKeys.id, keyId), eq(apiKeys.accountId, accountId), isNull(apiKeys.revokedAt)))
    .returning({ id: apiKeys.id });
  if (!row) throw new AppError("NOT_FOUND", `No active API key ${keyId}`);
}
