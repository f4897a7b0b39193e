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
      try {
        const outcome = await attemptDelivery(env, parsed.data, message.attempts);
        if (outcome.kind === "retry" || outcome.kind === "busy") {
          message.retry({ delaySeconds: outcome.delaySeconds });
        } else {
          message.ack();
        }
      } catch (error) {
        console.error(
          JSON.stringify({
            level: "error",
            msg: "webhook delivery failed to run",
            deliveryId: parsed.data.deliveryId,
            error: String(error),
          }),
        );
        message.retry({ delaySeconds: retryDelaySeconds(message.attempts, retryBaseSeconds(env)) });
      }
    }),
  );
}
