import { inArray } from "drizzle-orm";
import { chunks, database, IDS_PER_QUERY } from "../db/client";
import { capsules, webhooks } from "../db/schema";
import type { CloudEvent } from "../events/outbox";
import { enqueueUnqueued, insertDeliveries, type NewDeliveryRow, newDelivery } from "./deliveries";
import { type WebhookEventType, webhookEventType } from "./event-types";

interface FanOutEnv {
  DB: D1Database;
  WEBHOOKS: Queue;
}

interface Subscribable {
  event: CloudEvent;
  type: WebhookEventType;
  accountId: string | null;
  capsule: string | null;
}

function text(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

/**
 * Turns domain events into webhook deliveries: for each event with a subscribable type, one delivery per
 * webhook of the account concerned (`data.accountId`, else the owner of `data.capsule`) that subscribes to it,
 * recorded in D1 and queued on `soma-webhooks`. Idempotent: handling the same events again queues nothing new.
 * Returns how many deliveries were queued.
 */
export async function fanOutWebhooks(env: FanOutEnv, events: readonly CloudEvent[]): Promise<number> {
  const candidates: Subscribable[] = [];
  for (const event of events) {
    const type = webhookEventType(event.type);
    if (!type) continue;
    candidates.push({
      event,
      type,
      accountId: text(event.data.accountId),
      capsule: text(event.data.capsule),
    });
  }
  if (candidates.length === 0) return 0;
  const db = database(env.DB);

  const ownerless = [...new Set(candidates.filter((c) => !c.accountId && c.capsule).map((c) => c.capsule!))];
  const owners = new Map<string, string>();
  for (const part of chunks(ownerless, IDS_PER_QUERY)) {
    const rows = await db
      .select({ name: capsules.name, ownerId: capsules.ownerId })
      .from(capsules)
      .where(inArray(capsules.name, part));
    for (const row of rows) owners.set(row.name, row.ownerId);
  }
  for (const c of candidates) c.accountId ??= c.capsule ? (owners.get(c.capsule) ?? null) : null;

  const accountIds = [...new Set(candidates.flatMap((c) => (c.accountId ? [c.accountId] : [])))];
  const byAccount = new Map<string, (typeof webhooks.$inferSelect)[]>();
  for (const part of chunks(accountIds, IDS_PER_QUERY)) {
    const rows = await db.select().from(webhooks).where(inArray(webhooks.accountId, part));
    for (const row of rows) byAccount.set(row.accountId, [...(byAccount.get(row.accountId) ?? []), row]);
  }

  const deliveries: NewDeliveryRow[] = [];
  const traces = new Map<string, string>();
  for (const c of candidates) {
    for (const webhook of byAccount.get(c.accountId ?? "") ?? []) {
      if (!webhook.events.includes(c.type)) continue;
      const delivery = await newDelivery(webhook.id, {
        id: c.event.id,
        type: c.type,
        time: c.event.time,
        data: c.event.data,
      });
      deliveries.push(delivery);
      if (c.event.traceparent) traces.set(delivery.id, c.event.traceparent);
    }
  }
  if (deliveries.length === 0) return 0;
  await insertDeliveries(db, deliveries);
  return enqueueUnqueued(
    db,
    env,
    deliveries.map((d) => d.id),
    traces,
  );
}
