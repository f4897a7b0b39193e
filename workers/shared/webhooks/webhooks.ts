import { and, count, desc, eq } from "drizzle-orm";
import { type Database, newId, nowIso } from "../db/client";
import { webhookAttempts, webhookDeliveries, webhooks } from "../db/schema";
import { AppError } from "../errors";
import type { WebhookEventType } from "./event-types";
import { generateSecret } from "./signature";
import { checkOutboundUrl, type UrlPolicyEnv } from "./url-policy";

/** Bounds the fan-out work one event can cause. */
export const MAX_WEBHOOKS_PER_ACCOUNT = 20;

export interface WebhookView {
  id: string;
  url: string;
  events: WebhookEventType[];
  description: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface WebhookInput {
  url: string;
  events: WebhookEventType[];
  secret?: string | undefined;
  description?: string | undefined;
}

type WebhookRow = typeof webhooks.$inferSelect;

function view(row: WebhookRow): WebhookView {
  return {
    id: row.id,
    url: row.url,
    events: row.events as WebhookEventType[],
    description: row.description,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

/** The URL as it will be called, or VALIDATION_FAILED in the shape every bad body gets. */
function allowedUrl(env: UrlPolicyEnv, raw: string): string {
  const verdict = checkOutboundUrl(raw, env);
  if (!verdict.ok) {
    throw new AppError("VALIDATION_FAILED", `Invalid request body: url: ${verdict.reason}`, {
      issues: [{ path: "url", message: verdict.reason }],
    });
  }
  return verdict.url.toString();
}

function uniqueSorted(events: readonly WebhookEventType[]): WebhookEventType[] {
  return [...new Set(events)].sort();
}

/** An account's webhook, or NOT_FOUND (also for another account's, so ids reveal nothing). */
export async function ownedWebhook(db: Database, accountId: string, id: string): Promise<WebhookRow> {
  const [row] = await db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.id, id), eq(webhooks.accountId, accountId)))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No webhook ${id}`);
  return row;
}

/**
 * Registers a webhook for an account. The secret (generated unless given) is returned here and never again:
 * receivers use it to check `Soma-Signature`.
 */
export async function createWebhook(
  env: UrlPolicyEnv,
  db: Database,
  accountId: string,
  input: WebhookInput,
): Promise<{ webhook: WebhookView; secret: string }> {
  const url = allowedUrl(env, input.url);
  const [existing] = await db.select({ n: count() }).from(webhooks).where(eq(webhooks.accountId, accountId));
  if ((existing?.n ?? 0) >= MAX_WEBHOOKS_PER_ACCOUNT) {
    throw new AppError(
      "CONFLICT",
      `An account has at most ${MAX_WEBHOOKS_PER_ACCOUNT} webhooks; delete one or subscribe an existing one to more events`,
      { limit: MAX_WEBHOOKS_PER_ACCOUNT },
    );
  }
  const now = nowIso();
  const row: WebhookRow = {
    id: newId("wh"),
    accountId,
    url,
    events: uniqueSorted(input.events),
    secret: input.secret ?? generateSecret("whsec"),
    description: input.description ?? null,
    createdAt: now,
    updatedAt: now,
  };
  await db.insert(webhooks).values(row);
  return { webhook: view(row), secret: row.secret };
}

export async function listWebhooks(db: Database, accountId: string): Promise<WebhookView[]> {
  const rows = await db
    .select()
    .from(webhooks)
    .where(eq(webhooks.accountId, accountId))
    .orderBy(desc(webhooks.createdAt));
  return rows.map(view);
}

export async function getWebhook(db: Database, accountId: string, id: string): Promise<WebhookView> {
  return view(await ownedWebhook(db, accountId, id));
}

/** Changes a webhook's URL, events or description; deliveries still pending go to the new URL. */
export async function updateWebhook(
  env: UrlPolicyEnv,
  db: Database,
  accountId: string,
  id: string,
  input: Partial<Omit<WebhookInput, "secret">>,
): Promise<WebhookView> {
  const row = await ownedWebhook(db, accountId, id);
  const url = input.url === undefined ? row.url : allowedUrl(env, input.url);
  const changed: WebhookRow = {
    ...row,
    url,
    events: input.events === undefined ? row.events : uniqueSorted(input.events),
    description: input.description === undefined ? row.description : input.description,
    updatedAt: nowIso(),
  };
  await db
    .update(webhooks)
    .set({
      url: changed.url,
      events: changed.events,
      description: changed.description,
      updatedAt: changed.updatedAt,
    })
    .where(eq(webhooks.id, id));
  return view(changed);
}

/** Deletes a webhook with its delivery log; queued messages for it find nothing and stop. */
export async function deleteWebhook(db: Database, accountId: string, id: string): Promise<void> {
  await ownedWebhook(db, accountId, id);
  await db.batch([
    db.delete(webhookAttempts).where(eq(webhookAttempts.webhookId, id)),
    db.delete(webhookDeliveries).where(eq(webhookDeliveries.webhookId, id)),
    db.delete(webhooks).where(eq(webhooks.id, id)),
  ]);
}
