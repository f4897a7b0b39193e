import { and, eq, isNull, sql } from "drizzle-orm";
import { type AuditActor, actorId, auditStatement, sealAuditLog } from "../audit/log";
import { generateApiKey, hashApiKey } from "../auth/api-keys";
import type { Role } from "../auth/roles";
import { type ApiKeyScope, scopesFromStored } from "../auth/scopes";
import { AppError } from "../errors";
import { forgetRankedSearches } from "../marketplace/search-memo";
import { type Database, isUniqueViolation, newId, nowIso } from "./client";
import { accounts, apiKeys } from "./schema";

export interface AccountView {
  id: string;
  handle: string;
  email: string;
  roles: Role[];
  createdAt: string;
  /** When an admin verified this account as a publisher; null while unverified. */
  verifiedAt: string | null;
}

function view(row: typeof accounts.$inferSelect): AccountView {
  return {
    id: row.id,
    handle: row.handle,
    email: row.email,
    roles: row.roles as Role[],
    createdAt: row.createdAt,
    verifiedAt: row.verifiedAt ?? null,
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
  const keyId = newId("key");
  try {
    await db.batch([
      db.insert(accounts).values(row),
      db.insert(apiKeys).values({
        id: keyId,
        accountId: row.id,
        keyHash: await hashApiKey(apiKey),
        prefix: apiKey.slice(0, 12),
        createdAt: row.createdAt,
      }),
      auditStatement(db, {
        actor: { accountId: row.id },
        action: "account.created",
        target: `account:${row.id}`,
        details: { handle: row.handle, apiKeyId: keyId },
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
  await sealAuditLog(db);
  return { account: view({ ...row, verifiedAt: null, verifiedBy: null }), apiKey };
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
export async function setRoles(
  db: Database,
  actor: AuditActor,
  handle: string,
  roles: Role[],
): Promise<AccountView> {
  const next = Array.from(new Set<Role>(["user", ...roles]));
  const [before] = await db.select().from(accounts).where(eq(accounts.handle, handle)).limit(1);
  if (!before) throw new AppError("NOT_FOUND", `No account with handle "${handle}"`);
  const [updated] = await db.batch([
    db.update(accounts).set({ roles: next }).where(eq(accounts.id, before.id)).returning(),
    auditStatement(
      db,
      {
        actor,
        action: "account.roles_changed",
        target: `account:${before.id}`,
        details: { handle, from: before.roles, to: next },
      },
      sql`EXISTS (SELECT 1 FROM accounts WHERE id = ${before.id})`,
    ),
  ]);
  const [row] = updated;
  if (!row) throw new AppError("NOT_FOUND", `No account with handle "${handle}"`);
  await sealAuditLog(db);
  return view(row);
}

/**
 * Marks an account a verified publisher, or clears the mark. Setting the state it already has changes nothing
 * and records nothing, so retrying is safe; a change is audited in the same batch.
 */
export async function setPublisherVerified(
  db: Database,
  actor: AuditActor,
  handle: string,
  verified: boolean,
): Promise<{ account: AccountView; changed: boolean }> {
  const [before] = await db.select().from(accounts).where(eq(accounts.handle, handle)).limit(1);
  if (!before) throw new AppError("NOT_FOUND", `No account with handle "${handle}"`);
  if ((before.verifiedAt !== null) === verified) return { account: view(before), changed: false };
  const verifiedAt = verified ? nowIso() : null;
  const verifiedBy = verified ? actorId(actor) : null;
  const unchangedSince =
    before.verifiedAt === null ? isNull(accounts.verifiedAt) : eq(accounts.verifiedAt, before.verifiedAt);
  const [updated] = await db.batch([
    db
      .update(accounts)
      .set({ verifiedAt, verifiedBy })
      .where(and(eq(accounts.id, before.id), unchangedSince))
      .returning(),
    auditStatement(
      db,
      {
        actor,
        action: verified ? "account.verified" : "account.unverified",
        target: `account:${before.id}`,
        details: { handle },
      },
      verified
        ? sql`EXISTS (SELECT 1 FROM accounts WHERE id = ${before.id} AND verified_at = ${verifiedAt})`
        : sql`EXISTS (SELECT 1 FROM accounts WHERE id = ${before.id} AND verified_at IS NULL)`,
    ),
  ]);
  // The verified filter and badge of catalog searches read this.
  forgetRankedSearches();
  const [row] = updated;
  await sealAuditLog(db);
  if (!row) {
    // Another admin changed it between the read and the write: report what is stored now.
    const current = await findAccountByHandle(db, handle);
    if (!current) throw new AppError("NOT_FOUND", `No account with handle "${handle}"`);
    return { account: current, changed: false };
  }
  return { account: view(row), changed: true };
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
  actor: AuditActor,
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
  await db.batch([
    db.insert(apiKeys).values(row),
    auditStatement(db, {
      actor,
      action: "api_key.created",
      target: `api_key:${row.id}`,
      details: { accountId, prefix: row.prefix, scopes: scopesFromStored(row.scopes) },
    }),
  ]);
  await sealAuditLog(db);
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
export async function revokeApiKey(
  db: Database,
  actor: AuditActor,
  accountId: string,
  keyId: string,
): Promise<void> {
  const revokedAt = nowIso();
  const [revoked] = await db.batch([
    db
      .update(apiKeys)
      .set({ revokedAt })
      .where(and(eq(apiKeys.id, keyId), eq(apiKeys.accountId, accountId), isNull(apiKeys.revokedAt)))
      .returning({ id: apiKeys.id }),
    auditStatement(
      db,
      { actor, action: "api_key.revoked", target: `api_key:${keyId}`, details: { accountId } },
      sql`EXISTS (SELECT 1 FROM api_keys WHERE id = ${keyId} AND revoked_at = ${revokedAt})`,
    ),
  ]);
  if (revoked.length === 0) throw new AppError("NOT_FOUND", `No active API key ${keyId}`);
  await sealAuditLog(db);
}
