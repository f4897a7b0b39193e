import { database } from "../db/client";
import { timingSafeEqualText } from "../encoding";
import { AppError } from "../errors";
import { renderPrometheus } from "./metrics";
import { flushMetrics, metricsAggregator } from "./metrics-client";
import { approvalRate, storeMetrics } from "./store-metrics";

interface ScrapeEnv {
  SOMA_ADMIN_TOKEN: string;
  /** A scrape-only token, so Prometheus never holds the admin token. Optional: unset, only the admin token works. */
  METRICS_TOKEN?: string;
}

/** Accepts `Authorization: Bearer <METRICS_TOKEN or SOMA_ADMIN_TOKEN>`; anything else is UNAUTHENTICATED. */
export function requireScrapeToken(env: ScrapeEnv, authorization: string | undefined): void {
  const token = authorization?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
  const accepted = [env.METRICS_TOKEN, env.SOMA_ADMIN_TOKEN].filter(
    (candidate): candidate is string => typeof candidate === "string" && candidate.length >= 16,
  );
  if (token && accepted.some((candidate) => timingSafeEqualText(token, candidate))) return;
  throw new AppError("UNAUTHENTICATED", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>");
}

/**
 * The exposition text: the aggregator's recorded series (after this isolate's pending observations), the D1
 * counts and the approval rate derived from the gate decisions.
 */
export async function scrapeMetrics(env: Env): Promise<string> {
  await flushMetrics(env);
  const [recorded, stored] = await Promise.all([
    metricsAggregator(env).snapshot(),
    storeMetrics(database(env.DB)),
  ]);
  return renderPrometheus(recorded, [...stored, approvalRate(recorded)]);
}
