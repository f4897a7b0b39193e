import { Hono } from "hono";
import { requireScrapeToken, scrapeMetrics } from "../../shared/observability/scrape";
import type { AppEnv } from "../context";

/** Prometheus scrape endpoint (text exposition format 0.0.4), behind its own bearer token. */
export const metricsRoutes = new Hono<AppEnv>().get("/metrics", async (c) => {
  requireScrapeToken(c.env, c.req.header("authorization"));
  return c.body(await scrapeMetrics(c.env), 200, {
    "content-type": "text/plain; version=0.0.4; charset=utf-8",
    "cache-control": "no-store",
  });
});
