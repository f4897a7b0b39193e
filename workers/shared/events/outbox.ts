import { asc, inArray, lt } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { newId, nowIso } from "../db/client";
import { outbox } from "../db/schema";

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

/** Builds a platform event; `type` is `soma.<area>.<action>`, `subject` the entity it is about. */
export function cloudEvent(type: string, subject: string, data: Record<string, unknown>): CloudEvent {
  return {
    specversion: "1.0",
    id: newId("evt"),
    source: "soma://api",
    type,
    time: nowIso(),
    subject,
    datacontenttype: "application/json",
    data,
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
 * Hands outbox rows to the events Queue and deletes them once the Queue has them. Runs after each request
 * (waitUntil) and from the cron for anything left behind; a row sent twice is deduplicated downstream by id.
 */
export async function flushOutbox(
  db: Database,
  env: OutboxEnv,
  options: { olderThanMs?: number } = {},
): Promise<number> {
  const cutoff = new Date(Date.now() - (options.olderThanMs ?? 0)).toISOString();
  let sent = 0;
  for (;;) {
    const rows = await db
      .select()
      .from(outbox)
      .where(options.olderThanMs ? lt(outbox.createdAt, cutoff) : undefined)
      .orderBy(asc(outbox.createdAt))
      .limit(100);
    if (rows.length === 0) return sent;
    await env.EVENTS.sendBatch(
      rows.map((row) => ({ body: JSON.parse(row.body) as CloudEvent, contentType: "json" })),
    );
    await db.delete(outbox).where(
      inArray(
        outbox.id,
        rows.map((r) => r.id),
      ),
    );
    sent += rows.length;
    if (rows.length < 100) return sent;
  }
}
