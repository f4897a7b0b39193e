import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../context";

/**
 * Caches successful GET answers briefly with the Workers Cache API (per caller unless the answer is public):
 * dashboards that refresh every few seconds and popular searches then cost one query per window, not one per
 * viewer and refresh. `skip` leaves out requests a cheaper layer already serves.
 */
export const cacheFor = (seconds: number, options: { shared?: boolean; skip?: (url: URL) => boolean } = {}) =>
  createMiddleware<AppEnv>(async (c, next) => {
    if (c.req.method !== "GET" || typeof caches === "undefined") return next();
    if (options.skip?.(new URL(c.req.url))) return next();
    const principal = c.get("principal");
    const url = new URL(c.req.url);
    // Public answers share one entry; anything else is cached per caller.
    const who = options.shared ? "public" : (principal?.accountId ?? principal?.via ?? "anonymous");
    const key = new Request(`https://response-cache.soma.internal/${who}${url.pathname}${url.search}`);
    const cache = caches.default;
    const hit = await cache.match(key);
    if (hit) {
      const response = new Response(hit.body, hit);
      // The stored copy's Cache-Control is for the Cache API only; callers get what a fresh answer carries.
      response.headers.delete("Cache-Control");
      response.headers.set("X-Cache", "HIT");
      response.headers.set("X-Request-Id", c.get("requestId"));
      return response;
    }
    await next();
    if (c.res.status === 200) {
      const copy = c.res.clone();
      const stored = new Response(copy.body, copy);
      // The Cache API refuses to store `private` answers; the key already scopes a per-caller entry.
      stored.headers.set("Cache-Control", `public, max-age=${seconds}`);
      c.executionCtx.waitUntil(cache.put(key, stored));
      c.res.headers.set("X-Cache", "MISS");
    }
  });
