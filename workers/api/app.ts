import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { AppError, type ErrorCode } from "../shared/errors";
import { type RefusedRequest, reportRefusedRequest } from "../shared/events/security-events";
import type { AppEnv } from "./context";
import { type ErrorBody, STATUS_BY_CODE } from "./errors";
import { observeRequests, requestLog, requestLogger } from "./middleware/observability";
import { requestContext } from "./middleware/request-context";
import { apiSecurityHeaders, corsForConfiguredOrigins } from "./middleware/security";
import { accountRoutes, apiKeyRoutes } from "./routes/accounts";
import { adminRoutes } from "./routes/admin";
import { analyticsRoutes, eventRoutes, forecastRoutes, usageRoutes } from "./routes/analytics";
import { analyticsAdminRoutes } from "./routes/analytics-admin";
import { authRoutes } from "./routes/auth";
import { adjustmentRoutes, invoiceRoutes, payoutRoutes } from "./routes/billing";
import { budgetRoutes } from "./routes/budgets";
import { capsuleRoutes } from "./routes/capsules";
import {
  capsuleCommunityRoutes,
  collectionRoutes,
  featuredRoutes,
  moderationRoutes,
  trendingRoutes,
} from "./routes/community";
import { healthRoutes } from "./routes/health";
import { installRoutes } from "./routes/installs";
import { metricsRoutes } from "./routes/metrics";
import { projectRoutes, reviewTaskRoutes } from "./routes/projects";
import { reviewRoutes } from "./routes/reviews";
import { runnerRoutes } from "./routes/runners";
import { schemaRoutes } from "./routes/schemas";
import { githubHookRoutes, githubIntegrationRoutes, webhookRoutes } from "./routes/webhooks";
import { wellKnownRoutes } from "./routes/well-known";

const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: "BAD_REQUEST",
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
  429: "RATE_LIMITED",
};

/** The API: one Hono app, one sub-app per resource, one error shape. */
export const app = new Hono<AppEnv>()
  .use(observeRequests)
  .use(corsForConfiguredOrigins)
  .use(apiSecurityHeaders)
  // Before requestContext: the scrape token is not a principal's bearer, so /metrics checks its own.
  .route("/", metricsRoutes)
  .use(requestContext)
  .use(requestLogger)
  .route("/", healthRoutes)
  .route("/.well-known", wellKnownRoutes)
  .route("/v1/schemas", schemaRoutes)
  .route("/v1/accounts", accountRoutes)
  .route("/v1/api-keys", apiKeyRoutes)
  .route("/v1/auth", authRoutes)
  .route("/v1/capsules", capsuleRoutes)
  .route("/v1/capsules", capsuleCommunityRoutes)
  .route("/v1/moderation", moderationRoutes)
  .route("/v1/collections", collectionRoutes)
  .route("/v1/featured", featuredRoutes)
  .route("/v1/trending", trendingRoutes)
  .route("/v1", reviewRoutes)
  .route("/v1/installs", installRoutes)
  .route("/v1/projects", projectRoutes)
  .route("/v1/review-tasks", reviewTaskRoutes)
  .route("/v1/runners", runnerRoutes)
  .route("/v1/events", eventRoutes)
  .route("/v1/usage", usageRoutes)
  .route("/v1/forecast", forecastRoutes)
  .route("/v1/budgets", budgetRoutes)
  .route("/v1/invoices", invoiceRoutes)
  .route("/v1/payouts", payoutRoutes)
  .route("/v1/admin/adjustments", adjustmentRoutes)
  .route("/v1/analytics", analyticsRoutes)
  .route("/v1/admin", adminRoutes)
  .route("/v1/admin/analytics", analyticsAdminRoutes)
  .route("/v1/webhooks", webhookRoutes)
  .route("/v1/integrations/github", githubIntegrationRoutes)
  .route("/v1/hooks/github", githubHookRoutes);

/**
 * A request refused for a security reason, for the admin feed: credentials that did not verify (a bearer token,
 * or a signed hook), or a rate limit. A missing credential on a protected route is an ordinary 401, not an attack.
 */
function refusedRequest(c: Context<AppEnv>, code: ErrorCode, reason: string): RefusedRequest | null {
  const credentials =
    c.req.header("authorization") !== undefined ||
    c.req.header("x-hub-signature-256") !== undefined ||
    // The token exchange carries its API key in the body.
    new URL(c.req.url).pathname === "/v1/auth/token";
  if (code === "UNAUTHENTICATED" && !credentials) return null;
  if (code !== "UNAUTHENTICATED" && code !== "RATE_LIMITED") return null;
  return {
    kind: code === "RATE_LIMITED" ? "rate_limited" : "auth_failed",
    accountId: c.get("principal")?.accountId ?? null,
    address: c.req.header("cf-connecting-ip") ?? null,
    method: c.req.method,
    path: new URL(c.req.url).pathname,
    reason,
  };
}

app.onError((error, c) => {
  let code: ErrorCode = "INTERNAL";
  let message = "Something went wrong on our side; the request id helps us find it";
  let details: unknown;
  if (error instanceof AppError) {
    code = error.code;
    message = error.message;
    details = error.details;
  } else if (error instanceof HTTPException && error.status < 500) {
    code = CODE_BY_STATUS[error.status] ?? "BAD_REQUEST";
    message = error.message || "Bad request";
  } else {
    requestLog(c).error("unhandled error", { error });
  }
  const refused = refusedRequest(c, code, message);
  if (refused) {
    try {
      c.executionCtx.waitUntil(reportRefusedRequest(c.env, refused));
    } catch {
      // No execution context (a direct app.request call): nothing to report from.
    }
  }
  const body: ErrorBody = { error: { code, message, requestId: c.get("requestId") ?? "unknown" } };
  if (details !== undefined) body.error.details = details;
  return c.json(body, STATUS_BY_CODE[code]);
});

app.notFound((c) => {
  const body: ErrorBody = {
    error: {
      code: "NOT_FOUND",
      message: `No route for ${c.req.method} ${new URL(c.req.url).pathname}`,
      requestId: c.get("requestId") ?? "unknown",
    },
  };
  return c.json(body, 404);
});

export type AppType = typeof app;
