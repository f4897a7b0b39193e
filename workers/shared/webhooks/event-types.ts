/**
 * The event names a webhook may subscribe to: the platform's CloudEvent types without the `soma.` prefix.
 * `price.changed` is accepted before the platform emits it, so subscriptions made now start receiving it then.
 */
export const WEBHOOK_EVENT_TYPES = [
  "submission.decided",
  "capsule.published",
  "capsule.deprecated",
  "install.created",
  "project.completed",
  "project.failed",
  "task.review_requested",
  "budget.threshold",
  "price.changed",
] as const;

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** Sent to one webhook on request (`POST /v1/webhooks/:id/ping`), whatever it subscribes to. */
export const PING_EVENT_TYPE = "webhook.ping";

const SUBSCRIBABLE = new Set<string>(WEBHOOK_EVENT_TYPES);

/** The webhook event name of a CloudEvent type (`soma.capsule.published` -> `capsule.published`), or null. */
export function webhookEventType(cloudEventType: string): WebhookEventType | null {
  if (!cloudEventType.startsWith("soma.")) return null;
  const short = cloudEventType.slice("soma.".length);
  return SUBSCRIBABLE.has(short) ? (short as WebhookEventType) : null;
}
