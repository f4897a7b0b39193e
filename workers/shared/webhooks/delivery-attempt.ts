import { and, eq, isNull, lt, or, sql } from "drizzle-orm";
import { database, newId } from "../db/client";
import { webhookAttempts, webhookDeliveries, webhooks } from "../db/schema";
import type { DeliveryMessage } from "./deliveries";
import { SIGNATURE_HEADER, signatureHeader } from "./signature";
import { checkOutboundUrl } from "./url-policy";

/** Attempts per round (the first plus 14 retries); with the default 30 s base they span about 24.3 hours. */
export const MAX_DELIVERY_ATTEMPTS = 15;
/** The longest wait between two attempts, as a multiple of the base: 4 hours at 30 s. */
const MAX_DELAY_FACTOR = 480;
/** Queues refuses longer retry delays. */
const QUEUE_MAX_DELAY_SECONDS = 43_200;
const DEFAULT_BASE_SECONDS = 30;
const REQUEST_TIMEOUT_MS = 15_000;
/** Longer than one attempt can take, so a second message for the same delivery waits instead of sending too. */
const CLAIM_MS = 60_000;

export interface AttemptEnv {
  DB: D1Database;
  ENVIRONMENT: string;
  WEBHOOK_RETRY_BASE_SECONDS?: string;
}

/** The first retry delay in seconds (`WEBHOOK_RETRY_BASE_SECONDS`, 30 when unset or invalid). */
export function retryBaseSeconds(env: { WEBHOOK_RETRY_BASE_SECONDS?: string }): number {
  const base = Number(env.WEBHOOK_RETRY_BASE_SECONDS);
  return Number.isInteger(base) && base >= 1 ? base : DEFAULT_BASE_SECONDS;
}

/** Seconds to wait after the `failedAttempt`-th attempt (1-based): base x 2^(n-1), capped at 480 x base. */
export function retryDelaySeconds(failedAttempt: number, baseSeconds: number): number {
  const exponent = Math.max(0, Math.min(failedAttempt - 1, 30));
  return Math.min(baseSeconds * 2 ** exponent, baseSeconds * MAX_DELAY_FACTOR, QUEUE_MAX_DELAY_SECONDS);
}

/** Every wait of a round, in seconds: the delays after attempts 1 .. MAX_DELIVERY_ATTEMPTS - 1. */
export function retrySchedule(baseSeconds: number): number[] {
  return Array.from({ length: MAX_DELIVERY_ATTEMPTS - 1 }, (_, i) => retryDelaySeconds(i + 1, baseSeconds));
}

export type AttemptOutcome =
  | { kind: "delivered" }
  | { kind: "retry"; delaySeconds: number }
  | { kind: "failed" }
  /** Nothing to do: the delivery is gone, finished, or belongs to a newer round. */
  | { kind: "skipped" }
  /** Another message is sending this delivery right now; look again when its claim runs out. */
  | { kind: "busy"; delaySeconds: number };

interface HttpResult {
  ok: boolean;
  responseStatus: number | null;
  error: string | null;
}

async function post(url: string, headers: Record<string, string>, body: string): Promise<HttpResult> {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    await response.body?.cancel();
    const ok = response.status >= 200 && response.status < 300;
    return { ok, responseStatus: response.status, error: ok ? null : `HTTP ${response.status}` };
  } catch (error) {
    const timedOut = error instanceof Error && error.name === "TimeoutError";
    return {
      ok: false,
      responseStatus: null,
      error: timedOut ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : String(error).slice(0, 500),
    };
  }
}

/**
 * Makes one attempt of a delivery: claims it (so duplicate messages never send at once), POSTs the stored body
 * signed with the webhook's secret, and records the attempt. A 2xx answer delivers; anything else (including a
 * redirect, a timeout or a URL the policy now refuses) is retried with exponential backoff until the round's
 * last attempt, which marks the delivery failed. `attempt` is the message's attempt number in this round.
 */
export async function attemptDelivery(
  env: AttemptEnv,
  message: DeliveryMessage,
  attempt: number,
): Promise<AttemptOutcome> {
  const db = database(env.DB);
  const startedAt = Date.now();
  const now = new Date(startedAt).toISOString();
  const [delivery] = await db
    .update(webhookDeliveries)
    .set({ claimedUntil: new Date(startedAt + CLAIM_MS).toISOString() })
    .where(
      and(
        eq(webhookDeliveries.id, message.deliveryId),
        eq(webhookDeliveries.generation, message.generation),
        eq(webhookDeliveries.status, "pending"),
        or(isNull(webhookDeliveries.claimedUntil), lt(webhookDeliveries.claimedUntil, now)),
      ),
    )
    .returning();
  if (!delivery) {
    const [current] = await db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.id, message.deliveryId))
      .limit(1);
    if (!current?.claimedUntil || current.generation !== message.generation || current.status !== "pending") {
      return { kind: "skipped" };
    }
    const wait = Math.ceil((Date.parse(current.claimedUntil) - startedAt) / 1000) + 1;
    return { kind: "busy", delaySeconds: Math.max(1, wait) };
  }
  const [webhook] = await db.select().from(webhooks).where(eq(webhooks.id, delivery.webhookId)).limit(1);
  if (!webhook) return { kind: "skipped" };

  const verdict = checkOutboundUrl(webhook.url, env);
  const result: HttpResult = verdict.ok
    ? await post(
        verdict.url.toString(),
        {
          "content-type": "application/json",
          "user-agent": "SomaAgent-Webhooks/1.0",
          [SIGNATURE_HEADER]: await signatureHeader(
            webhook.secret,
            delivery.body,
            Math.floor(Date.now() / 1000),
          ),
          "soma-delivery": delivery.id,
          "soma-event": delivery.eventType,
        },
        delivery.body,
      )
    : { ok: false, responseStatus: null, error: `URL refused: ${verdict.reason}` };
  const finishedAt = Date.now();
  const last = attempt >= MAX_DELIVERY_ATTEMPTS;
  const delaySeconds = retryDelaySeconds(attempt, retryBaseSeconds(env));
  const outcome: AttemptOutcome = result.ok
    ? { kind: "delivered" }
    : last
      ? { kind: "failed" }
      : { kind: "retry", delaySeconds };
  const at = new Date(finishedAt).toISOString();
  await db.batch([
    db.insert(webhookAttempts).values({
      id: newId("wha"),
      deliveryId: delivery.id,
      webhookId: delivery.webhookId,
      attempt: delivery.attemptCount + 1,
      manual: message.manual,
      ok: result.ok,
      responseStatus: result.responseStatus,
      error: result.error,
      durationMs: finishedAt - startedAt,
      createdAt: at,
    }),
    db
      .update(webhookDeliveries)
      .set({
        attemptCount: sql`${webhookDeliveries.attemptCount} + 1`,
        lastResponseStatus: result.responseStatus,
        lastError: result.error,
        updatedAt: at,
      })
      .where(eq(webhookDeliveries.id, delivery.id)),
    // A redelivery that started meanwhile owns the status from here on.
    db
      .update(webhookDeliveries)
      .set({
        status: outcome.kind === "retry" ? "pending" : outcome.kind,
        nextAttemptAt:
          outcome.kind === "retry" ? new Date(finishedAt + delaySeconds * 1000).toISOString() : null,
        deliveredAt: result.ok ? at : delivery.deliveredAt,
        claimedUntil: null,
      })
      .where(
        and(eq(webhookDeliveries.id, delivery.id), eq(webhookDeliveries.generation, message.generation)),
      ),
  ]);
  return outcome;
}
