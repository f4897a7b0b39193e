import { z } from "zod";
import { storeEvents } from "../shared/analytics/events";
import { spoolKeySchema } from "../shared/analytics/ingest";
import { database } from "../shared/db/client";
import { type CloudEvent, cloudEventSchema, markOutboxStored } from "../shared/events/outbox";
import { coordinator } from "../shared/kamachiq/coordinator-client";
import { eventMetrics } from "../shared/observability/event-metrics";
import { Logger, traceFields } from "../shared/observability/logger";
import { recordMetrics } from "../shared/observability/metrics-client";
import { continueTrace } from "../shared/observability/trace";
import { fanOutWebhooks } from "../shared/webhooks/fan-out";

/**
 * Ingestion and the outbox pack many events into one message (Queues cap batches at 100 messages, not at 100
 * events).
 */
const envelopeSchema = z
  .object({
    events: z.array(cloudEventSchema).min(1).max(1000),
    /** The ingesting request's trace; optional, so messages sent before it existed still validate. */
    traceparent: z.string().max(55).optional(),
    /** The R2 object that keeps this message until its events are stored (see ingestEvents). */
    spool: spoolKeySchema.optional(),
  })
  .strict();

/** Deletes the spool objects of finished messages; one left behind is only sent again and deduplicated. */
async function releaseSpool(env: Env, keys: string[], log: Logger): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    try {
      await env.BUNDLES.delete(keys.slice(i, i + 1000));
    } catch (error) {
      log.warn("spool release failed", { objects: keys.length, error });
    }
  }
}

/** `<project id>:<seq>`, the ids of the events a project's coordinator sends. */
const COORDINATOR_EVENT_ID = /^([0-9a-f]{64}):([1-9][0-9]{0,15})$/;

/**
 * Tells the producers which of their events are now stored (stored before, too: a redelivery), so they stop
 * keeping them for a resend: the outbox rows of API events, and each project's coordinator. A failed
 * confirmation only means a later resend, which the exactly-once check absorbs, so it never fails the batch.
 */
async function confirmToProducers(env: Env, events: CloudEvent[], log: Logger): Promise<void> {
  const outboxIds = events.filter((e) => e.source === "soma://api").map((e) => e.id);
  const outboxDone =
    outboxIds.length === 0
      ? Promise.resolve()
      : markOutboxStored(database(env.DB), outboxIds).catch((error: unknown) => {
          log.warn("outbox confirmation failed", { events: outboxIds.length, error });
        });
  const byProject = new Map<string, number[]>();
  for (const event of events) {
    if (event.source !== "soma://kamachiq") continue;
    const match = COORDINATOR_EVENT_ID.exec(event.id);
    if (!match) continue;
    const seqs = byProject.get(match[1]!) ?? [];
    seqs.push(Number(match[2]));
    byProject.set(match[1]!, seqs);
  }
  await Promise.all([
    outboxDone,
    ...[...byProject].map(async ([projectId, seqs]) => {
      try {
        await coordinator(env, projectId).confirmEvents(seqs);
      } catch (error) {
        log.warn("event confirmation failed", { projectId, events: seqs.length, error });
      }
    }),
  ]);
}

/** A message body: JSON as sent (`json`), or JSON text (`text`, as ingestion packs it); undefined if neither. */
function messageBody(body: unknown): unknown {
  if (typeof body !== "string") return body;
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The analytics consumer: one ClickHouse insert per batch, exactly once per event id. Malformed messages go
 * to the dead-letter queue at once; when ClickHouse is unavailable the batch is retried with backoff, and after
 * the retries are spent the queue moves it to the dead-letter queue for replay.
 */
export async function handleEvents(
  batch: MessageBatch<unknown>,
  env: Env,
  ctx: ExecutionContext,
): Promise<void> {
  const valid: { message: Message<unknown>; events: CloudEvent[]; traceparent?: string; spool?: string }[] =
    [];
  /** Spool objects of messages that are done: stored, or parked as poison (the dead letter keeps the body). */
  const done: string[] = [];
  const log = new Logger({ component: "consumer", queue: batch.queue });
  for (const message of batch.messages) {
    const body = messageBody(message.body);
    // An envelope (ingestion packs many events into one message) or a single event (the outboxes).
    const packed = typeof body === "object" && body !== null && "events" in body;
    const parsed = packed ? envelopeSchema.safeParse(body) : cloudEventSchema.safeParse(body);
    if (parsed.success) {
      if ("events" in parsed.data) {
        const { events, traceparent, spool } = parsed.data;
        valid.push({ message, events, traceparent, spool });
      } else {
        valid.push({ message, events: [parsed.data], traceparent: parsed.data.traceparent });
      }
      continue;
    }
    const issue = body === undefined ? "the body is not JSON" : parsed.error.issues[0]?.message;
    log.warn("invalid event message", { requestId: message.id, issue });
    await env.EVENTS_DLQ.send({ reason: `invalid event: ${issue}`, body: message.body as never });
    const spool = spoolKeySchema.safeParse((body as { spool?: unknown } | null)?.spool);
    if (spool.success) done.push(spool.data);
    message.ack();
  }
  if (valid.length === 0) {
    await releaseSpool(env, done, log);
    return;
  }
  const events = valid.flatMap((v) => v.events);
  try {
    const { inserted, duplicates, stored } = await storeEvents(env, events);
    // Subscribed events go out as webhook deliveries; each (webhook, event) is recorded once, so a retried
    // batch sends nothing twice.
    await fanOutWebhooks(env, events);
    await confirmToProducers(env, events, log);
    for (const { message, spool } of valid) {
      message.ack();
      if (spool) done.push(spool);
    }
    await releaseSpool(env, done, log);
    recordMetrics(env, ctx, eventMetrics(stored));
    // One line per trace in the batch: ingestion spreads one request over several messages (the envelope
    // carries its trace), and an outbox message packs the events of several requests (each event carries its own).
    const byTrace = new Map<string | undefined, { messages: Set<string>; events: number }>();
    const count = (trace: string | undefined, messageId: string, events: number) => {
      const entry = byTrace.get(trace) ?? { messages: new Set<string>(), events: 0 };
      entry.messages.add(messageId);
      entry.events += events;
      byTrace.set(trace, entry);
    };
    for (const { message, events: sent, traceparent } of valid) {
      if (traceparent !== undefined) count(traceparent, message.id, sent.length);
      else for (const event of sent) count(event.traceparent, message.id, 1);
    }
    for (const [traceparent, entry] of byTrace) {
      log.info("events stored", {
        requestId: entry.messages.values().next().value,
        ...traceFields(continueTrace(traceparent)),
        messages: entry.messages.size,
        events: entry.events,
      });
    }
    log.debug("events batch", { messages: valid.length, inserted, duplicates });
  } catch (error) {
    await releaseSpool(env, done, log);
    log.error("events insert failed", { messages: valid.length, error });
    for (const { message } of valid)
      message.retry({ delaySeconds: Math.min(300, 2 ** Math.min(message.attempts, 8)) });
  }
}
