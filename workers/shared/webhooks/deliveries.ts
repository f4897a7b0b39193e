import { and, desc, eq, inArray, isNull, lt, or, sql } from "drizzle-orm";
import { z } from "zod";
import { chunks, type Database, IDS_PER_QUERY, newId, nowIso } from "../db/client";
import { webhookAttempts, webhookDeliveries } from "../db/schema";
import { fromBase64, sha256Hex, toBase64Url } from "../encoding";
import { AppError } from "../errors";
import { PING_EVENT_TYPE } from "./event-types";
import { ownedWebhook } from "./webhooks";

export type DeliveryStatus = "pending" | "delivered" | "failed";
export const DELIVERY_STATUSES = ["pending", "delivered", "failed"] as const;

/** What a receiver gets as the POST body. `id` is the event's id: the same event never has two ids. */
export interface DeliveryBody {
  id: string;
  type: string;
  time: string;
  data: Record<string, unknown>;
}

/** The queue message that asks for one attempt of a delivery in its current round (`generation`). */
export const deliveryMessageSchema = z
  .object({
    deliveryId: z.string().regex(/^whd_[a-f0-9]{32}$/),
    generation: z.int().min(1),
    manual: z.boolean().default(false),
    /** The W3C trace of the event's origin; optional, so messages queued before it existed still validate. */
    traceparent: z.string().max(55).optional(),
  })
  .strict();

export type DeliveryMessage = z.output<typeof deliveryMessageSchema>;

export interface DeliveryView {
  id: string;
  webhookId: string;
  eventId: string;
  type: string;
  status: DeliveryStatus;
  attempts: number;
  lastResponseStatus: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface AttemptView {
  attempt: number;
  manual: boolean;
  ok: boolean;
  responseStatus: number | null;
  error: string | null;
  durationMs: number;
  at: string;
}

type DeliveryRow = typeof webhookDeliveries.$inferSelect;
export type NewDeliveryRow = typeof webhookDeliveries.$inferInsert;

interface DeliveryEnv {
  DB: D1Database;
  WEBHOOKS: Queue;
}

const ROWS_PER_INSERT = 5;
const MESSAGES_PER_SEND = 100;

function view(row: DeliveryRow): DeliveryView {
  return {
    id: row.id,
    webhookId: row.webhookId,
    eventId: row.eventId,
    type: row.eventType,
    status: row.status as DeliveryStatus,
    attempts: row.attemptCount,
    lastResponseStatus: row.lastResponseStatus,
    lastError: row.lastError,
    nextAttemptAt: row.nextAttemptAt,
    deliveredAt: row.deliveredAt,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

/** The delivery id of an event for a webhook: the same pair always gets the same id, so fan-out is idempotent. */
export async function deliveryId(webhookId: string, eventId: string): Promise<string> {
  return `whd_${(await sha256Hex(`${webhookId}\n${eventId}`)).slice(0, 32)}`;
}

/** A pending delivery row carrying the exact body that will be signed and sent. */
export async function newDelivery(webhookId: string, body: DeliveryBody): Promise<NewDeliveryRow> {
  const now = nowIso();
  return {
    id: await deliveryId(webhookId, body.id),
    webhookId,
    eventId: body.id,
    eventType: body.type,
    body: JSON.stringify(body),
    status: "pending",
    generation: 1,
    attemptCount: 0,
    nextAttemptAt: now,
    createdAt: now,
    updatedAt: now,
  };
}

/** Inserts deliveries, skipping (webhook, event) pairs that already have one. */
export async function insertDeliveries(db: Database, rows: readonly NewDeliveryRow[]): Promise<void> {
  const statements = chunks(rows, ROWS_PER_INSERT).map((part) =>
    db.insert(webhookDeliveries).values(part).onConflictDoNothing(),
  );
  const [first, ...rest] = statements;
  if (first) await db.batch([first, ...rest]);
}

/**
 * Sends the first queue message of every delivery among `ids` that has none yet, then marks them queued. A
 * batch of events handled twice finds its deliveries queued already and sends nothing. `traces` gives a
 * delivery's message the traceparent of its event.
 */
export async function enqueueUnqueued(
  db: Database,
  env: DeliveryEnv,
  ids: readonly string[],
  traces: ReadonlyMap<string, string> = new Map(),
): Promise<number> {
  let sent = 0;
  for (const part of chunks(ids, IDS_PER_QUERY)) {
    const rows = await db
      .select({ id: webhookDeliveries.id, generation: webhookDeliveries.generation })
      .from(webhookDeliveries)
      .where(and(inArray(webhookDeliveries.id, part), isNull(webhookDeliveries.queuedAt)));
    for (const batch of chunks(rows, MESSAGES_PER_SEND)) {
      await env.WEBHOOKS.sendBatch(
        batch.map((row) => ({
          body: {
            deliveryId: row.id,
            generation: row.generation,
            manual: false,
            ...(traces.has(row.id) ? { traceparent: traces.get(row.id) } : {}),
          } satisfies DeliveryMessage,
          contentType: "json" as const,
        })),
      );
      await db
        .update(webhookDeliveries)
        .set({ queuedAt: nowIso() })
        .where(
          inArray(
            webhookDeliveries.id,
            batch.map((row) => row.id),
          ),
        );
      sent += batch.length;
    }
  }
  return sent;
}

const cursorSchema = z.tuple([z.iso.datetime(), z.string().regex(/^whd_[a-f0-9]{32}$/)]);

function encodeCursor(row: DeliveryRow): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify([row.createdAt, row.id])));
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const padded = cursor.replace(/-/g, "+").replace(/_/g, "/");
    return cursorSchema.parse(JSON.parse(new TextDecoder().decode(fromBase64(padded))));
  } catch {
    throw new AppError("VALIDATION_FAILED", "Invalid query: cursor: not a cursor from a previous page", {
      issues: [{ path: "cursor", message: "not a cursor from a previous page" }],
    });
  }
}

/** A webhook's deliveries, newest first, a page at a time. */
export async function listDeliveries(
  db: Database,
  accountId: string,
  webhookId: string,
  options: { limit: number; cursor?: string | undefined; status?: DeliveryStatus | undefined },
): Promise<{ deliveries: DeliveryView[]; nextCursor: string | null }> {
  await ownedWebhook(db, accountId, webhookId);
  const after = options.cursor ? decodeCursor(options.cursor) : null;
  const rows = await db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.webhookId, webhookId),
        options.status ? eq(webhookDeliveries.status, options.status) : undefined,
        after
          ? or(
              lt(webhookDeliveries.createdAt, after[0]),
              and(eq(webhookDeliveries.createdAt, after[0]), lt(webhookDeliveries.id, after[1])),
            )
          : undefined,
      ),
    )
    .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
    .limit(options.limit + 1);
  const page = rows.slice(0, options.limit);
  const last = page.at(-1);
  return {
    deliveries: page.map(view),
    nextCursor: rows.length > options.limit && last ? encodeCursor(last) : null,
  };
}

async function ownedDelivery(
  db: Database,
  accountId: string,
  webhookId: string,
  id: string,
): Promise<DeliveryRow> {
  await ownedWebhook(db, accountId, webhookId);
  const [row] = await db
    .select()
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.webhookId, webhookId)))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No delivery ${id} for webhook ${webhookId}`);
  return row;
}

/** One delivery with the body it sends and every attempt made, oldest first. */
export async function getDelivery(
  db: Database,
  accountId: string,
  webhookId: string,
  id: string,
): Promise<{ delivery: DeliveryView & { body: DeliveryBody }; attempts: AttemptView[] }> {
  const row = await ownedDelivery(db, accountId, webhookId, id);
  const attempts = await db
    .select()
    .from(webhookAttempts)
    .where(eq(webhookAttempts.deliveryId, id))
    .orderBy(webhookAttempts.attempt);
  return {
    delivery: { ...view(row), body: JSON.parse(row.body) as DeliveryBody },
    attempts: attempts.map((a) => ({
      attempt: a.attempt,
      manual: a.manual,
      ok: a.ok,
      responseStatus: a.responseStatus,
      error: a.error,
      durationMs: a.durationMs,
      at: a.createdAt,
    })),
  };
}

/**
 * Sends a delivery again now, whatever its status, and starts a new round of retries. Messages of the earlier
 * round see the new generation and stop, so the two rounds never both retry.
 */
export async function redeliver(
  env: DeliveryEnv,
  db: Database,
  accountId: string,
  webhookId: string,
  id: string,
): Promise<DeliveryView> {
  await ownedDelivery(db, accountId, webhookId, id);
  const now = nowIso();
  const [row] = await db
    .update(webhookDeliveries)
    .set({
      status: "pending",
      generation: sql`${webhookDeliveries.generation} + 1`,
      nextAttemptAt: now,
      claimedUntil: null,
      queuedAt: now,
      updatedAt: now,
    })
    .where(eq(webhookDeliveries.id, id))
    .returning();
  if (!row) throw new AppError("NOT_FOUND", `No delivery ${id} for webhook ${webhookId}`);
  await env.WEBHOOKS.send(
    { deliveryId: id, generation: row.generation, manual: true } satisfies DeliveryMessage,
    { contentType: "json" },
  );
  return view(row);
}

/** Queues a `webhook.ping` delivery to one webhook, so its owner can check the receiver end to end. */
export async function pingWebhook(
  env: DeliveryEnv,
  db: Database,
  accountId: string,
  webhookId: string,
): Promise<DeliveryView> {
  await ownedWebhook(db, accountId, webhookId);
  const row = await newDelivery(webhookId, {
    id: newId("evt"),
    type: PING_EVENT_TYPE,
    time: nowIso(),
    data: { webhookId },
  });
  await insertDeliveries(db, [row]);
  await enqueueUnqueued(db, env, [row.id]);
  const [stored] = await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, row.id)).limit(1);
  if (!stored) throw new AppError("INTERNAL", "The ping delivery was not stored");
  return view(stored);
}
