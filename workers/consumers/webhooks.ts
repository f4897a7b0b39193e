import { Logger, traceFields } from "../shared/observability/logger";
import { continueTrace } from "../shared/observability/trace";
import { deliveryMessageSchema } from "../shared/webhooks/deliveries";
import { attemptDelivery, retryBaseSeconds, retryDelaySeconds } from "../shared/webhooks/delivery-attempt";

/**
 * The webhook delivery consumer: one attempt per message, the messages of a batch in parallel. The retry delay
 * comes from the delivery schedule, not the queue's, so the schedule survives a change of queue settings.
 * Malformed messages go to the dead-letter queue at once.
 */
export async function handleWebhookDeliveries(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  await Promise.all(
    batch.messages.map(async (message) => {
      const parsed = deliveryMessageSchema.safeParse(message.body);
      if (!parsed.success) {
        await env.WEBHOOKS_DLQ.send({
          reason: `invalid webhook delivery message: ${parsed.error.issues[0]?.message}`,
          body: message.body as never,
        });
        message.ack();
        return;
      }
      const log = new Logger({
        component: "consumer",
        queue: batch.queue,
        requestId: message.id,
        ...traceFields(continueTrace(parsed.data.traceparent)),
        deliveryId: parsed.data.deliveryId,
      });
      try {
        const outcome = await attemptDelivery(env, parsed.data, message.attempts);
        log.info("webhook delivery attempted", { outcome: outcome.kind, attempts: message.attempts });
        if (outcome.kind === "retry" || outcome.kind === "busy") {
          message.retry({ delaySeconds: outcome.delaySeconds });
        } else {
          message.ack();
        }
      } catch (error) {
        log.error("webhook delivery failed to run", { error });
        message.retry({ delaySeconds: retryDelaySeconds(message.attempts, retryBaseSeconds(env)) });
      }
    }),
  );
}
