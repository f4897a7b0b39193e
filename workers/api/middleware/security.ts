import { cors } from "hono/cors";
import { createMiddleware } from "hono/factory";
import { secureHeaders } from "hono/secure-headers";
import type { AppEnv } from "../context";

/**
 * Security headers on every API answer: JSON is never a document to frame, sniff or run scripts in. The web
 * app's own Content-Security-Policy ships with its static files (web/_headers).
 */
export const apiSecurityHeaders = secureHeaders({
  contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
  crossOriginResourcePolicy: "same-site",
  referrerPolicy: "no-referrer",
  xFrameOptions: "DENY",
  strictTransportSecurity: "max-age=63072000; includeSubDomains",
});

/** CORS for the origins listed in CORS_ORIGINS (comma-separated); no other origin gets CORS headers. */
export const corsForConfiguredOrigins = createMiddleware<AppEnv>(async (c, next) => {
  const allowed = (c.env.CORS_ORIGINS ?? "")
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  return cors({
    origin: (origin) => (allowed.includes(origin) ? origin : null),
    allowMethods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    allowHeaders: ["Authorization", "Content-Type", "X-Request-Id", "Last-Event-ID"],
    exposeHeaders: ["X-Request-Id"],
    maxAge: 600,
  })(c, next);
});
