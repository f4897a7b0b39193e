import { z } from "zod";
import { AppError } from "../errors";
import { type CloudEvent, cloudEventSchema } from "../events/outbox";
import type { ClickHouseEnv } from "./clickhouse";
import { storedIds } from "./events";

/** Token usage must carry real numbers; other event types carry any JSON object. */
export const usageDataSchema = z
  .object({
    inputTokens: z.int().min(0).max(1_000_000_000),
    outputTokens: z.int().min(0).max(1_000_000_000),
    model: z.string().max(200).optional(),
    capsule: z.string().max(200).optional(),
    projectId: z.string().max(128).optional(),
  })
  .passthrough();

export const ingestBodySchema = z.array(cloudEventSchema).min(1).max(1000);

/** Bytes per queue message stay well under the 128 KB message limit. */
const MAX_MESSAGE_BYTES = 96 * 1024;

/**
 * Accepts events from an integration: the account comes from auth (never the body), ids are scoped to the
 * account, repeated ids (in the request or already stored) are counted as duplicates and not sent again.
 * Events travel in packed messages so ingestion scales past the queue's 100-message batches.
 */
export async function ingestEvents(
  env: ClickHouseEnv & { EVENTS: Queue },
  accountId: string,
  events: z.output<typeof ingestBodySchema>,
): Promise<{ accepted: number; duplicates: number }> {
  const problems: { index: number; message: string }[] = [];
  events.forEach((event, index) => {
    if (event.type === "soma.usage.tokens") {
      const usage = usageDataSchema.safeParse(event.data);
      if (!usage.success)
        problems.push({
          index,
          message: `data: ${usage.error.issues[0]?.path.join(".")}: ${usage.error.issues[0]?.message}`,
        });
    }
    if (Date.parse(event.time) > Date.now() + 5 * 60_000)
      problems.push({ index, message: "time is in the future" });
  });
  if (problems.length > 0) {
    throw new AppError(
      "VALIDATION_FAILED",
      `Invalid event at index ${problems[0]!.index}: ${problems[0]!.message}`,
      {
        issues: problems.map((p) => ({ path: `${p.index}`, message: p.message })),
      },
    );
  }
  const scoped = new Map<string, CloudEvent>();
  for (const event of events) {
    const id = `acct:${accountId}:${event.id}`;
    if (!scoped.has(id)) scoped.set(id, { ...event, id, data: { ...event.data, accountId } });
  }
  let known = new Set<string>();
  try {
    known = await storedIds(env, [...scoped.keys()]);
  } catch {
    // The store is briefly unavailable: the consumer's own check still keeps every id to one row.
  }
  const fresh = [...scoped.values()].filter((e) => !known.has(e.id));
  const messages: { body: { events: CloudEvent[] }; contentType: "json" }[] = [];
  let current: CloudEvent[] = [];
  let size = 0;
  for (const event of fresh) {
    const bytes = JSON.stringify(event).length + 1;
    if (current.length > 0 && size + bytes > MAX_MESSAGE_BYTES) {
      messages.push({ body: { events: current }, contentType: "json" });
      current = [];
      size = 0;
    }
    current.push(event);
    size += bytes;
  }
  if (current.length > 0) messages.push({ body: { events: current }, contentType: "json" });
  for (let i = 0; i < messages.length; i += 100) await env.EVENTS.sendBatch(messages.slice(i, i + 100));
  return { accepted: fresh.length, duplicates: events.length - fresh.length };
}
