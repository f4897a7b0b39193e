import { z } from "zod";
import { storeEvents } from "../shared/analytics/events";
import { type CloudEvent, cloudEventSchema } from "../shared/events/outbox";
import { fanOutWebhooks } from "../shared/webhooks/fan-out";

/** Ingestion packs many events into one message (Queues cap batches at 100 messages, not at 100 events). */
const envelopeSchema = z.object({ events: z.array(cloudEventSchema).min(1).max(1000) }).strict();

/**
 * The analytics consumer: one ClickHouse insert per batch, exactly once per event id. Malformed messages go
 * to the dead-letter queue at once; when ClickHouse is unavailable the batch is retried with backoff, and after
 * the retries are spent the queue moves it to the dead-letter queue for replay.
 */
export async function handleEvents(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const valid: { message: Message<unknown>; events: CloudEvent[] }[] = [];
  for (const message of batch.messages) {
    const single = cloudEventSchema.safeParse(message.body);
    if (single.success) {
      valid.push({ message, events: [single.data] });
      continue;
    }
    const envelope = envelopeSchema.safeParse(message.body);
    if (envelope.success) {
      valid.push({ message, events: envelope.data.events });
      continue;
    }
    const parsed = single;
    await env.EVENTS_DLQ.send({
      reason: `invalid event: ${parsed.error.issues[0]?.message}`,
      body: message.body as never,
    });
    message.ack();
  }
  if (valid.length === 0) return;
  try {
    await storeEvents(
      env,
      valid.flatMap((v) => v.events),
    );
    // Subscribed events go out as webhook deliveries; each (webhook, event) is recorded once, so a retried
    // batch sends nothing twice.
    await fanOutWebhooks(
      env,
      valid.flatMap((v) => v.events),
    );
    for (const { message } of valid) message.ack();
  } catch (error) {
    console.error(JSON.stringify({ level: "error", msg: "events insert failed", error: String(error) }));
    for (const { message } of valid)
      message.retry({ delaySeconds: Math.min(300, 2 ** Math.min(message.attempts, 8)) });
  }
}
