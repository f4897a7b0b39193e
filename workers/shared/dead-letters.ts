import { and, asc, eq, inArray } from "drizzle-orm";
import type { Database } from "./db/client";
import { deadLetters } from "./db/schema";

export const REPLAYABLE_QUEUES = ["soma-events", "soma-agent-tasks"] as const;
export type ReplayableQueue = (typeof REPLAYABLE_QUEUES)[number];

export async function listDeadLetters(db: Database, queue: ReplayableQueue | undefined, limit: number) {
  const rows = await db
    .select()
    .from(deadLetters)
    .where(queue ? eq(deadLetters.queue, queue) : undefined)
    .orderBy(asc(deadLetters.createdAt))
    .limit(limit);
  return rows.map((r) => ({ ...r, body: JSON.parse(r.body) as unknown }));
}

/**
 * Sends dead letters back to their queue and removes them once the queue has them. Messages that were poison
 * come back as poison and land here again; the reason tells an operator which is which.
 */
export async function replayDeadLetters(
  db: Database,
  queues: Record<ReplayableQueue, Queue>,
  queue: ReplayableQueue,
  limit: number,
): Promise<{ replayed: number }> {
  const rows = await db
    .select()
    .from(deadLetters)
    .where(and(eq(deadLetters.queue, queue)))
    .orderBy(asc(deadLetters.createdAt))
    .limit(limit);
  for (let i = 0; i < rows.length; i += 100) {
    const chunk = rows.slice(i, i + 100);
    await queues[queue].sendBatch(
      chunk.map((r) => ({ body: JSON.parse(r.body) as unknown, contentType: "json" as const })),
    );
    await db.delete(deadLetters).where(
      inArray(
        deadLetters.id,
        chunk.map((r) => r.id),
      ),
    );
  }
  return { replayed: rows.length };
}
