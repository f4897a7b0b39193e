import { and, asc, desc, eq, gt, isNotNull, isNull, type SQL, sql } from "drizzle-orm";
import type { Principal } from "../auth/principal";
import { type Database, newId, nowIso } from "../db/client";
import { auditLog } from "../db/schema";
import { sha256Hex } from "../encoding";

/** What the audit log records. Each is written in the same D1 batch as the action, where the action has one. */
export const AUDIT_ACTIONS = [
  "account.created",
  "account.roles_changed",
  "account.verified",
  "account.unverified",
  "auth.token_issued",
  "api_key.created",
  "api_key.revoked",
  "submission.decided",
  "capsule.published",
  "capsule.deprecated",
  "capsule.yanked",
  "billing.adjustment_granted",
  "review.moderated",
  "featured.changed",
  "integration.github_linked",
  "integration.github_unlinked",
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** Who acted: a caller, or the platform itself (the cron finishing an approved publish). */
export type AuditActor = Pick<Principal, "accountId"> | "system";

/** The `prev_hash` of the first entry. */
export const GENESIS_HASH = "0".repeat(64);

export interface AuditEntry {
  seq: number;
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  details: Record<string, unknown>;
  prevHash: string | null;
  hash: string | null;
}

/** The actor as the log stores it: an account id, "admin-token" or "system". */
export function actorId(actor: AuditActor): string {
  if (actor === "system") return "system";
  return actor.accountId ?? "admin-token";
}

/**
 * JSON with object keys sorted at every level and no whitespace: the one byte form an entry is hashed in, so
 * any verifier can recompute it from the entry as the API returns it.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** hash = sha256hex(prev_hash + "\n" + canonical JSON of the entry's content). */
export function entryHash(
  prevHash: string,
  entry: Pick<AuditEntry, "seq" | "id" | "at" | "actor" | "action" | "target" | "details">,
): Promise<string> {
  const { seq, id, at, actor, action, target, details } = entry;
  return sha256Hex(`${prevHash}\n${canonicalJson({ seq, id, at, actor, action, target, details })}`);
}

/**
 * One statement recording an action, for the action's own batch. With `onlyIf`, the entry is written only when
 * that condition holds at its point in the batch (so a no-op update records nothing).
 */
export function auditStatement(
  db: Database,
  input: { actor: AuditActor; action: AuditAction; target: string; details?: Record<string, unknown> },
  onlyIf?: SQL,
) {
  const details = canonicalJson(input.details ?? {});
  // Every column in table order, as an insert from a query needs; a NULL seq takes the next AUTOINCREMENT value.
  return db
    .insert(auditLog)
    .select(
      sql`SELECT NULL, ${newId("aud")}, ${nowIso()}, ${actorId(input.actor)}, ${input.action}, ${input.target}, ${details}, NULL, NULL${
        onlyIf ? sql` WHERE ${onlyIf}` : sql``
      }`,
    );
}

/** Records an action that has no D1 write of its own to share a batch with (an access token issued). */
export async function recordAudit(db: Database, input: Parameters<typeof auditStatement>[1]): Promise<void> {
  await auditStatement(db, input);
  await sealAuditLog(db);
}

function parseRow(row: typeof auditLog.$inferSelect): AuditEntry {
  let details: Record<string, unknown>;
  try {
    details = JSON.parse(row.details) as Record<string, unknown>;
  } catch {
    // Left for the verifier to flag: an entry whose stored details are not JSON was edited.
    details = { unparseable: row.details };
  }
  return { ...row, details };
}

/**
 * Chains the entries not yet sealed, in seq order, onto the last sealed one. Deterministic, so two sealers racing
 * compute the same hashes, and each update only applies to a row still unsealed.
 */
export async function sealAuditLog(db: Database, maxEntries = 1000): Promise<number> {
  let sealed = 0;
  while (sealed < maxEntries) {
    const [last] = await db
      .select({ seq: auditLog.seq, hash: auditLog.hash })
      .from(auditLog)
      .where(isNotNull(auditLog.hash))
      .orderBy(desc(auditLog.seq))
      .limit(1);
    const pending = await db
      .select()
      .from(auditLog)
      .where(gt(auditLog.seq, last?.seq ?? 0))
      .orderBy(asc(auditLog.seq))
      .limit(100);
    const [first, ...rest] = pending;
    if (!first) break;
    let prev = last?.hash ?? GENESIS_HASH;
    const updates = [];
    for (const row of [first, ...rest]) {
      const hash = await entryHash(prev, parseRow(row));
      updates.push(
        db
          .update(auditLog)
          .set({ prevHash: prev, hash })
          .where(and(eq(auditLog.seq, row.seq), isNull(auditLog.hash))),
      );
      prev = hash;
    }
    const [head, ...tail] = updates;
    if (head) await db.batch([head, ...tail]);
    sealed += pending.length;
  }
  return sealed;
}

/**
 * A page of the audit log after `after` (a seq), sealed first. `lastSeq` is the highest seq ever assigned
 * (SQLite's AUTOINCREMENT counter), so a verifier can tell a deleted last entry from a short log.
 */
export async function readAuditLog(
  db: Database,
  query: { after: number; limit: number },
): Promise<{ items: AuditEntry[]; nextAfter: number | null; lastSeq: number }> {
  await sealAuditLog(db);
  const rows = await db
    .select()
    .from(auditLog)
    .where(gt(auditLog.seq, query.after))
    .orderBy(asc(auditLog.seq))
    .limit(query.limit + 1);
  const counter = await db.get<{ seq: number } | undefined>(
    sql`SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'`,
  );
  const items = rows.slice(0, query.limit).map(parseRow);
  return {
    items,
    nextAfter: rows.length > query.limit ? (items.at(-1)?.seq ?? null) : null,
    lastSeq: counter?.seq ?? 0,
  };
}
