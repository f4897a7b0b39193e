import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { matchedRoutes } from "hono/route";
import { Logger, traceFields } from "../../shared/observability/logger";
import { recordMetrics } from "../../shared/observability/metrics-client";
import { continueTrace, formatTraceparent } from "../../shared/observability/trace";
import { withTraceparent } from "../../shared/observability/trace-scope";
import type { AppEnv } from "../context";

/**
 * Runs first on every request: starts its span of the caller's W3C trace (a new trace when the caller sent no
 * valid `traceparent`) and echoes it as `traceparent`; after the response, writes one access-log line and
 * records the request's count and latency by route pattern, never by raw path (bounded label values).
 */
export const observeRequests = createMiddleware<AppEnv>(async (c, next) => {
  const started = Date.now();
  // Provisional: requestContext sets the same id by the same rule for the routes behind it; routes mounted
  // before it (/metrics) keep this one.
  const incoming = c.req.header("x-request-id");
  const requestId = incoming && /^[\w.-]{8,64}$/.test(incoming) ? incoming : crypto.randomUUID();
  c.set("requestId", requestId);
  c.header("X-Request-Id", requestId);
  const trace = continueTrace(c.req.header("traceparent"));
  c.set("trace", trace);
  const traceparent = formatTraceparent(trace);
  c.header("traceparent", traceparent);
  await withTraceparent(traceparent, () => next());
  const durationMs = Date.now() - started;
  const status = c.res.status;
  const route = routePattern(c);
  requestLog(c).info("request", { method: c.req.method, route, status, durationMs });
  const labels = { route, method: c.req.method, status: String(status) };
  let ctx: { waitUntil(promise: Promise<unknown>): void } | null = null;
  try {
    ctx = c.executionCtx;
  } catch {
    // No execution context (app.fetch called without one): nothing may outlive the response, so no metrics.
  }
  if (ctx) {
    recordMetrics(c.env, ctx, [
      { name: "http_requests_total", labels, value: 1 },
      { name: "http_request_duration_seconds", labels, value: durationMs / 1000 },
    ]);
  }
});

/** Runs once the request id is known (after requestContext): the logger routes use, with id and trace. */
export const requestLogger = createMiddleware<AppEnv>(async (c, next) => {
  c.set("log", new Logger({ requestId: c.get("requestId"), ...traceFields(c.get("trace")) }));
  await next();
});

/** The request's logger; requests answered before requestLogger ran (a CORS preflight) get one here. */
export function requestLog(c: Context<AppEnv>): Logger {
  const log = c.get("log");
  if (log) return log;
  const trace = c.get("trace");
  return new Logger({ requestId: c.get("requestId") ?? null, ...(trace ? traceFields(trace) : {}) });
}

/** The pattern of the handler that answered (`/v1/capsules/:ns/:name`), or `unmatched` for a 404 by no route. */
function routePattern(c: Context<AppEnv>): string {
  const route = matchedRoutes(c)[c.req.routeIndex];
  if (!route || route.method === "ALL") return "unmatched";
  return route.path;
}
