import { z } from "zod";
import { database } from "../db/client";
import { AppError } from "../errors";
import { type CloudEvent, cloudEventSchema } from "../events/outbox";
import { packEvents } from "../events/pack";
import type { ClickHouseEnv } from "./clickhouse";
import { storedIds } from "./events";
import { integrationEventProblems } from "./integration-events";

export const ingestBodySchema = z.array(cloudEventSchema).min(1).max(1000);

/** Where packed messages wait in R2 until stored: `spool/events/<uuid>` (fixed length, for the size limit). */
export const SPOOL_PREFIX = "spool/events/";
export const spoolKeySchema = z.string().regex(/^spool\/events\/[0-9a-f-]{36}$/);
const spoolKey = () => `${SPOOL_PREFIX}${crypto.randomUUID()}`;

/**
 * Accepts events from an integration: every event is checked first (reserved types, amounts, capsules; see
 * `integrationEventProblems`) and one bad event refuses the whole request. The account comes from auth (never
 * the body), ids are scoped to the account, repeated ids (in the request or already stored) are counted as
 * duplicates and not sent again. Events travel in packed messages so ingestion scales past the queue's 100-message batches.
 * With `EVENTS_SPOOL` "r2" (local), each message is spooled in R2 before the 202 and deleted by the consumer
 * once stored; the cron sends again what the queue lost (see `resendSpooled`), so an accepted event survives a
 * crash of a runtime whose queue lives in memory. Cloudflare Queues persist what they accept ("off").
 */
export async function ingestEvents(
  env: ClickHouseEnv & { EVENTS: Queue; DB: D1Database; BUNDLES: R2Bucket; EVENTS_SPOOL?: string },
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
  const spooled = env.EVENTS_SPOOL !== "off";
  const messages = packEvents(fresh, traceparent, spooled ? spoolKey : undefined);
  // Spooled before the 202: each message's body is kept in R2 until the consumer has stored its events.
  if (spooled) await Promise.all(messages.map((m) => env.BUNDLES.put(m.spool!, m.body)));
  try {
    for (let i = 0; i < messages.length; i += 100) {
      await env.EVENTS.sendBatch(
        messages.slice(i, i + 100).map(({ body, contentType }) => ({ body, contentType })),
      );
    }
  } catch (error) {
    // Not accepted: the caller gets an error and sends again, so the spool must not send these later.
    if (spooled) await env.BUNDLES.delete(messages.map((m) => m.spool!)).catch(() => undefined);
    throw error;
  }
  return { accepted: fresh.length, duplicates: events.length - fresh.length };
}

/** A spooled message older than this was lost by the queue (or is still retrying) and is sent again. */
export const SPOOL_RESEND_MS = 120_000;

/**
 * The cron's recovery of ingested events: spooled messages older than SPOOL_RESEND_MS go to the queue again
 * (the consumer's exactly-once check drops what was stored already, and deletes the object). Each one is
 * written back first, which restarts its clock, so a message still waiting in a retry is not sent every run.
 */
export async function resendSpooled(
  env: { EVENTS: Queue; BUNDLES: R2Bucket },
  now = Date.now(),
): Promise<number> {
  let cursor: string | undefined;
  let resent = 0;
  for (let page = 0; page < 10; page++) {
    const listing = await env.BUNDLES.list({
      prefix: SPOOL_PREFIX,
      limit: 1000,
      ...(cursor ? { cursor } : {}),
    });
    const stale = listing.objects.filter((o) => now - o.uploaded.getTime() >= SPOOL_RESEND_MS).slice(0, 100);
    for (const object of stale) {
      const stored = await env.BUNDLES.get(object.key);
      if (!stored) continue;
      const body = await stored.text();
      await env.BUNDLES.put(object.key, body);
      await env.EVENTS.send(body, { contentType: "text" });
      resent++;
    }
    if (!listing.truncated) break;
    cursor = listing.cursor;
  }
  return resent;
}
