import { and, asc, inArray, isNotNull, isNull, lt, or, sql } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { chunks, IDS_PER_QUERY, newId, nowIso } from "../db/client";
import { outbox } from "../db/schema";
import { currentTraceparent } from "../observability/trace-scope";
import { packEventTexts } from "./pack";

/** A CloudEvents 1.0 event in JSON form, the envelope every domain event travels in. */
export const cloudEventSchema = z.object({
  specversion: z.literal("1.0"),
  id: z.string().min(1).max(128),
  source: z.string().min(1).max(256),
  type: z.string().regex(/^[a-z0-9]+(\.[a-z0-9_]+)+$/),
  time: z.iso.datetime({ offset: true }),
  subject: z.string().max(512).optional(),
  datacontenttype: z.literal("application/json").optional(),
  data: z.record(z.string(), z.unknown()),
  /** The CloudEvents distributed-tracing extension: the W3C traceparent of the work that produced the event. */
  traceparent: z.string().max(55).optional(),
});

export type CloudEvent = z.output<typeof cloudEventSchema>;

/**
 * Builds a platform event; `type` is `soma.<area>.<action>`, `subject` the entity it is about. Made during a
 * traced request, it carries that request's `traceparent` (the CloudEvents distributed-tracing extension).
 */
export function cloudEvent(type: string, subject: string, data: Record<string, unknown>): CloudEvent {
  const traceparent = currentTraceparent();
  return {
    specversion: "1.0",
    id: newId("evt"),
    source: "soma://api",
    type,
    time: nowIso(),
    subject,
    datacontenttype: "application/json",
    data,
    ...(traceparent ? { traceparent } : {}),
  };
}

/** The outbox insert to put in the same D1 batch as the state change the event describes. */
export function outboxInsert(db: Database, event: CloudEvent) {
  return db.insert(outbox).values({ id: event.id, body: JSON.stringify(event), createdAt: event.time });
}

interface OutboxEnv {
  DB: D1Database;
  EVENTS: Queue;
}

/**
 * A row handed to the queue and not confirmed stored after this long is sent again; each further resend of
 * the same row waits twice as long as the one before, up to 2^OUTBOX_MAX_DOUBLINGS times this (about 2 hours).
 */
export const OUTBOX_RESEND_MS = 120_000;
const OUTBOX_MAX_DOUBLINGS = 6;

/**
 * Hands outbox rows to the events Queue, packed into few messages, and marks them sent; the analytics
 * consumer marks them stored and the cron deletes them then, so a message the queue loses is sent again, never lost. Runs shortly after a
 * request wrote events (flushOutboxSoon: the rows not sent yet) and from the cron (`olderThanMs`: rows a request left unsent for that
 * long, and rows still unconfirmed OUTBOX_RESEND_MS after they were sent, twice that after a resend, and so
 * on). A row sent twice is deduplicated downstream by id.
 */
export async function flushOutbox(
  db: Database,
  env: OutboxEnv,
  options: { olderThanMs?: number } = {},
): Promise<number> {
  const now = Date.now();
  const unsent = options.olderThanMs
    ? and(isNull(outbox.sentAt), lt(outbox.createdAt, new Date(now - options.olderThanMs).toISOString()))
    : isNull(outbox.sentAt);
  const due = options.olderThanMs
    ? or(
        unsent,
        and(
          isNull(outbox.storedAt),
          // The shortest wait keeps the (stored_at, sent_at) index in use; the doubling is checked on what it finds.
          lt(outbox.sentAt, new Date(now - OUTBOX_RESEND_MS).toISOString()),
          sql`(julianday(${new Date(now).toISOString()}) - julianday(${outbox.sentAt})) * 86400000 >= ${OUTBOX_RESEND_MS} * (1 << min(${outbox.resends}, ${OUTBOX_MAX_DOUBLINGS}))`,
        ),
      )
    : unsent;
  let sent = 0;
  for (;;) {
    const rows = await db.select().from(outbox).where(due).orderBy(asc(outbox.createdAt)).limit(100);
    if (rows.length === 0) return sent;
    // Packed like ingestion's messages: the events queue delivers at most 100 messages a batch to one
    // consumer at a time, so one message per event would cap the API's events at 100 a batch. Each event
    // keeps its own traceparent inside; the envelope carries none.
    await env.EVENTS.sendBatch(
      packEventTexts(rows.map((row) => row.body)).map(({ body, contentType }) => ({ body, contentType })),
    );
    const sentAt = new Date().toISOString();
    for (const part of chunks(
      rows.map((r) => r.id),
      IDS_PER_QUERY,
    )) {
      await db
        .update(outbox)
        .set({ sentAt, resends: sql`${outbox.resends} + (${outbox.sentAt} IS NOT NULL)` })
        .where(inArray(outbox.id, part));
    }
    sent += rows.length;
    if (rows.length < 100) return sent;
  }
}

/** Requests that write events within this window share one flush. */
const FLUSH_DELAY_MS = 50;
let flushScheduled = false;

/**
 * Flushes the outbox shortly after a request wrote to it. Writes within FLUSH_DELAY_MS share one flush,
 * kept alive by the request that scheduled it (the others do not wait on it), so a burst of installs costs
 * one outbox read instead of one each, and concurrent flushes no longer pick up and send the same rows.
 * A row written while a flush runs schedules the next one; the cron catches anything an isolate's death left.
 */
export function flushOutboxSoon(
  db: Database,
  env: OutboxEnv,
  ctx: { waitUntil(promise: Promise<unknown>): void },
): void {
  if (flushScheduled) return;
  flushScheduled = true;
  ctx.waitUntil(
    new Promise((resolve) => setTimeout(resolve, FLUSH_DELAY_MS)).then(() => {
      flushScheduled = false;
      return flushOutbox(db, env);
    }),
  );
}

/** The analytics consumer's confirmation: these events are stored, their outbox rows are done. */
export async function markOutboxStored(db: Database, ids: string[]): Promise<void> {
  const storedAt = new Date().toISOString();
  for (const part of chunks(ids, IDS_PER_QUERY)) {
    await db
      .update(outbox)
      .set({ storedAt })
      .where(and(inArray(outbox.id, part), isNull(outbox.storedAt)));
  }
}

/** Deletes the rows whose events the analytics consumer confirmed stored (the cron). */
export async function pruneOutbox(db: Database): Promise<void> {
  await db.delete(outbox).where(isNotNull(outbox.storedAt));
}
