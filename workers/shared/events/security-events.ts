import type { Database } from "../db/client";
import { sha256Hex } from "../encoding";
import { type CloudEvent, cloudEvent, outboxInsert } from "./outbox";

export const AUTH_FAILED_EVENT = "soma.security.auth_failed";
export const RATE_LIMITED_EVENT = "soma.security.rate_limited";
export const ROLES_CHANGED_EVENT = "soma.account.roles_changed";
export const VERIFICATION_CHANGED_EVENT = "soma.account.verification_changed";

/** One event per source per window: an attacker's thousand refused requests are one line in the admin feed. */
const WINDOW_MS = 60_000;

/** Ids sent from this isolate lately, so a flood costs one queue send per source and window, not one per request. */
const recentlySent = new Map<string, number>();
const MAX_REMEMBERED = 5_000;

function remember(id: string, now: number): boolean {
  if (recentlySent.has(id)) return false;
  if (recentlySent.size >= MAX_REMEMBERED) {
    for (const [key, at] of recentlySent) if (at < now - WINDOW_MS) recentlySent.delete(key);
    // Still full of live windows: forget the oldest rather than grow without bound.
    if (recentlySent.size >= MAX_REMEMBERED) recentlySent.delete(recentlySent.keys().next().value ?? "");
  }
  recentlySent.set(id, now);
  return true;
}

export interface RefusedRequest {
  kind: "auth_failed" | "rate_limited";
  /** Who was refused: the account when known, else the client address. Never a credential. */
  accountId: string | null;
  address: string | null;
  method: string;
  path: string;
  reason: string;
}

/**
 * The event for a refused request. Its id names the kind, the source and the minute, so repeats within a minute
 * (in any isolate) collapse into one stored event: the consumer drops ids already stored.
 */
export async function refusedRequestEvent(refused: RefusedRequest, now = Date.now()): Promise<CloudEvent> {
  const source = refused.accountId ?? refused.address ?? "unknown";
  const window = Math.floor(now / WINDOW_MS);
  const type = refused.kind === "auth_failed" ? AUTH_FAILED_EVENT : RATE_LIMITED_EVENT;
  const event = cloudEvent(type, refused.path, {
    accountId: refused.accountId ?? "",
    address: refused.address,
    method: refused.method,
    path: refused.path,
    reason: refused.reason,
    windowStart: new Date(window * WINDOW_MS).toISOString(),
  });
  event.id = `security:${refused.kind}:${(await sha256Hex(source)).slice(0, 32)}:${window}`;
  event.time = new Date(now).toISOString();
  return event;
}

/**
 * Sends a refused request's event straight to the events queue, at most once per source and window from this
 * isolate. Best effort: it runs after the response (waitUntil) and swallows failures, so it never fails or slows
 * the refused request.
 */
export async function reportRefusedRequest(
  env: { EVENTS: Queue },
  refused: RefusedRequest,
  now = Date.now(),
): Promise<void> {
  try {
    const event = await refusedRequestEvent(refused, now);
    if (!remember(event.id, now)) return;
    await env.EVENTS.send(event, { contentType: "json" });
  } catch {
    // A lost security event must not become a failed request; the next window reports again.
  }
}

/**
 * Records an account's new roles in the outbox (`soma.account.roles_changed`, `data.accountId` the account whose
 * roles changed, `by` who changed them); the caller flushes the outbox after responding.
 */
export async function recordRolesChanged(
  db: Database,
  account: { id: string; handle: string; roles: readonly string[] },
  actor: { accountId: string | null; handle: string | null; via: string },
): Promise<void> {
  const event = cloudEvent(ROLES_CHANGED_EVENT, `account/${account.id}`, {
    accountId: account.id,
    handle: account.handle,
    to: [...account.roles],
    by: actor.accountId === null ? { via: actor.via } : { accountId: actor.accountId, handle: actor.handle },
  });
  await outboxInsert(db, event);
}

/**
 * Records an account's new publisher verification in the outbox (`soma.account.verification_changed`,
 * `data.verified` the new state, `by` who changed it); the caller flushes the outbox after responding.
 */
export async function recordVerificationChanged(
  db: Database,
  account: { id: string; handle: string; verifiedAt: string | null },
  actor: { accountId: string | null; handle: string | null; via: string },
): Promise<void> {
  const event = cloudEvent(VERIFICATION_CHANGED_EVENT, `account/${account.id}`, {
    accountId: account.id,
    handle: account.handle,
    verified: account.verifiedAt !== null,
    by: actor.accountId === null ? { via: actor.via } : { accountId: actor.accountId, handle: actor.handle },
  });
  await outboxInsert(db, event);
}
