import type { MetricsAggregator } from "../../../durable-objects/metrics-aggregator";
import { Logger } from "./logger";
import { MAX_OBSERVATIONS_PER_CALL, type Observation } from "./metrics";

interface MetricsEnv {
  METRICS_AGGREGATOR: DurableObjectNamespace<MetricsAggregator>;
}

/** The one aggregator every isolate reports to. */
export function metricsAggregator(env: MetricsEnv): DurableObjectStub<MetricsAggregator> {
  return env.METRICS_AGGREGATOR.get(env.METRICS_AGGREGATOR.idFromName("platform"));
}

// Observations not yet sent from this isolate. A staging area, never a source of truth: the totals live in
// the aggregator, and what sits here for the few milliseconds before a flush is all an isolate's death can lose.
const pending: Observation[] = [];
let flushScheduled = false;
/** Beyond this an isolate that cannot reach the aggregator drops new observations rather than grow. */
const MAX_PENDING = 20_000;
/** Requests finishing within this window share one call to the aggregator. */
const FLUSH_DELAY_MS = 50;

const log = new Logger({ component: "metrics" });

/**
 * Queues observations and makes sure a flush runs after the response (`waitUntil`), so metrics never add
 * latency to a request and a busy isolate sends one small batch per window instead of one call per request.
 */
export function recordMetrics(
  env: MetricsEnv,
  ctx: { waitUntil(promise: Promise<unknown>): void },
  observations: Observation[],
): void {
  const room = MAX_PENDING - pending.length;
  pending.push(...observations.slice(0, Math.max(0, room)));
  if (flushScheduled) return;
  flushScheduled = true;
  ctx.waitUntil(
    new Promise((resolve) => setTimeout(resolve, FLUSH_DELAY_MS)).then(() => {
      flushScheduled = false;
      return flushMetrics(env);
    }),
  );
}

/** Sends everything pending from this isolate now. `GET /metrics` calls it first, so it sees its own requests. */
export async function flushMetrics(env: MetricsEnv): Promise<void> {
  while (pending.length > 0) {
    const batch = pending.splice(0, MAX_OBSERVATIONS_PER_CALL);
    try {
      await metricsAggregator(env).record(batch);
    } catch (error) {
      log.warn("metrics flush failed", { dropped: batch.length, error });
      return;
    }
  }
}
