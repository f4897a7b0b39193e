import { database, nowIso } from "../shared/db/client";
import { deadLetters } from "../shared/db/schema";

/** Keeps every dead-lettered message in D1 until an operator replays it (`npm run events:replay`). */
export async function handleDeadLetters(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const db = database(env.DB);
  const queue = batch.queue.replace(/-dlq$/, "");
  await db
    .insert(deadLetters)
    .values(
      batch.messages.map((m) => {
        const body = m.body as { reason?: unknown; body?: unknown } | null;
        const wrapped = body !== null && typeof body === "object" && "reason" in body && "body" in body;
        return {
          id: m.id,
          queue,
          body: JSON.stringify(wrapped ? body.body : m.body),
          reason: wrapped ? String(body.reason) : `retries exhausted after ${m.attempts} attempts`,
          createdAt: nowIso(),
        };
      }),
    )
    .onConflictDoNothing();
  batch.ackAll();
}
