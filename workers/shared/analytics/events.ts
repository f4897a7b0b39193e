import { z } from "zod";
import type { CloudEvent } from "../events/outbox";
import { type ClickHouseEnv, insertRows, queryRows } from "./clickhouse";
import { dateTimeText, sql } from "./sql";

/** The columns of the ClickHouse `events` table; every one is always sent. */
export interface EventRow {
  id: string;
  type: string;
  source: string;
  subject: string;
  time: string;
  account_id: string;
  project_id: string;
  capsule: string;
  model: string;
  status: string;
  input_tokens: number;
  output_tokens: number;
  amount_micro_usd: number;
  data: string;
  ingested_at: string;
}

const text = (value: unknown): string => (typeof value === "string" ? value.slice(0, 512) : "");
const count = (value: unknown): number =>
  typeof value === "number" && Number.isInteger(value) && value >= 0 ? value : 0;

/** A UTC timestamp as most producers write it; its DateTime text is two slices, no Date needed. */
const UTC_ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z$/;

/** The `YYYY-MM-DD hh:mm:ss` (UTC) of a validated CloudEvent `time`. */
function eventTimeText(time: string): string {
  return UTC_ISO.test(time) ? `${time.slice(0, 10)} ${time.slice(11, 19)}` : dateTimeText(new Date(time));
}

/**
 * Flattens a CloudEvent into the analytics columns the queries and rollups group by. `ingestedAt` is the
 * DateTime text of the batch (one per insert).
 */
export function eventRow(event: CloudEvent, ingestedAt: string): EventRow {
  const data = event.data;
  const failed = event.type.endsWith(".failed") || data.outcome === "failure" || data.status === "failure";
  const amount = data.amountMicroUsd;
  return {
    id: event.id,
    type: event.type,
    source: event.source,
    subject: event.subject ?? "",
    time: eventTimeText(event.time),
    account_id: text(data.accountId),
    project_id: text(data.projectId),
    capsule: text(data.capsule),
    model: text(data.model),
    status: failed ? "failure" : "success",
    input_tokens: count(data.inputTokens),
    output_tokens: count(data.outputTokens),
    amount_micro_usd: typeof amount === "number" && Number.isInteger(amount) ? amount : 0,
    data: JSON.stringify(data),
    ingested_at: ingestedAt,
  };
}

const STORED_IDS_PER_QUERY = 2000;
const STORED_IDS_QUERIES_AT_ONCE = 4;

/** Ids among `ids` that are already stored. The events table is ordered by id, so this is an index lookup. */
export async function storedIds(env: ClickHouseEnv, ids: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  // Chunks keep each query under ClickHouse's default 256 KiB max_query_size. A few run at once: each is an
  // index lookup that mostly waits on the round trip, and a large batch has tens of them.
  const chunks: string[][] = [];
  for (let i = 0; i < ids.length; i += STORED_IDS_PER_QUERY)
    chunks.push(ids.slice(i, i + STORED_IDS_PER_QUERY));
  let next = 0;
  const worker = async () => {
    while (next < chunks.length) {
      const chunk = chunks[next++] as string[];
      const rows = await queryRows(
        env,
        sql`SELECT DISTINCT id FROM events WHERE id IN ${chunk}`,
        z.object({ id: z.string() }),
      );
      for (const row of rows) found.add(row.id);
    }
  };
  await Promise.all(Array.from({ length: Math.min(STORED_IDS_QUERIES_AT_ONCE, chunks.length) }, worker));
  return found;
}

/**
 * Stores events exactly once: drops ids repeated in the batch and ids already stored, then writes the rest in
 * one insert. The events consumer is the only writer and runs one batch at a time, so check-then-insert holds;
 * a batch redelivered after a failure finds its stored ids and skips them.
 */
export async function storeEvents(
  env: ClickHouseEnv,
  events: CloudEvent[],
): Promise<{ inserted: number; duplicates: number; stored: CloudEvent[] }> {
  const unique = new Map<string, CloudEvent>();
  for (const event of events) if (!unique.has(event.id)) unique.set(event.id, event);
  const known = await storedIds(env, [...unique.keys()]);
  const now = dateTimeText(new Date());
  const stored = [...unique.values()].filter((e) => !known.has(e.id));
  const rows = stored.map((e) => eventRow(e, now));
  await insertRows(env, "events", rows as unknown as Record<string, unknown>[]);
  return { inserted: rows.length, duplicates: events.length - rows.length, stored };
}
