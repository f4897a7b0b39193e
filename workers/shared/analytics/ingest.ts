import { z } from "zod";
import { database } from "../db/client";
import { AppError } from "../errors";
import { type CloudEvent, cloudEventSchema } from "../events/outbox";
import type { ClickHouseEnv } from "./clickhouse";
import { storedIds } from "./events";
import { integrationEventProblems } from "./integration-events";

export const ingestBodySchema = z.array(cloudEventSchema).min(1).max(1000);

/** Bytes per queue message stay well under the 128 KB message limit. */
const MAX_MESSAGE_BYTES = 96 * 1024;

/**
 * Accepts events from an integration: every event is checked first (reserved types, amounts, capsules; see
 * `integrationEventProblems`) and one bad event refuses the whole request. The account comes from auth (never
 * the body), ids are scoped to the account, repeated ids (in the request or already stored) are counted as
 * duplicates and not sent again. Events travel in packed messages so ingestion scales past the queue's 100-message batches.
 */
export async function ingestEvents(
  env: ClickHouseEnv & { EVENTS: Queue; DB: D1Database },
  accountId: string,
  events: z.output<typeof ingestBodySchema>,
  /** The ingesting request's W3C traceparent, carried on every message to the consumer. */
  traceparent?: string,
): Promise<{ accepted: number; duplicates: number }> {
  const problems = await integrationEventProblems(database(env.DB), accountId, events);
  if (problems.length > 0) {
    const first = problems[0]!;
    throw new AppError(
      "VALIDATION_FAILED",
      `Invalid event at index ${first.index}: ${first.field} ${first.message}`,
      { issues: problems.map((p) => ({ path: `${p.index}.${p.field}`, message: p.message })) },
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
  const trace = traceparent ? { traceparent } : {};
  const messages: { body: { events: CloudEvent[]; traceparent?: string }; contentType: "json" }[] = [];
  let current: CloudEvent[] = [];
  let size = 0;
  for (const event of fresh) {
    const bytes = JSON.stringify(event).length + 1;
    if (current.length > 0 && size + bytes > MAX_MESSAGE_BYTES) {
      messages.push({ body: { events: current, ...trace }, contentType: "json" });
      current = [];
      size = 0;
    }
    current.push(event);
    size += bytes;
  }
  if (current.length > 0) messages.push({ body: { events: current, ...trace }, contentType: "json" });
  for (let i = 0; i < messages.length; i += 100) await env.EVENTS.sendBatch(messages.slice(i, i + 100));
  return { accepted: fresh.length, duplicates: events.length - fresh.length };
}
