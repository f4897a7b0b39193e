import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../context";

/**
 * Caches successful GET answers briefly with the Workers Cache API, per caller: dashboards that refresh every
 * few seconds then cost one ClickHouse query per window instead of one per viewer and refresh.
 */
export const cacheFor = (seconds: number) =>
  createMiddleware<AppEnv>(async (c, next) => {
    if (c.req.method !== "GET" || typeof caches === "undefined") return next();
    const principal = c.get("principal");
    const url = new URL(c.req.url);
    const key = new Request(
      `https://analytics-cache.soma.internal/${principal?.accountId ?? principal?.via ?? "anon"}${url.pathname}${url.search}`,
    );
    const cache = caches.default;
    const hit = await cache.match(key);
    if (hit) {
      const response = new Response(hit.body, hit);
      response.headers.set("X-Cache", "HIT");
      response.headers.set("X-Request-Id", c.get("requestId"));
      return response;
    }
    await next();
    if (c.res.status === 200) {
      const copy = c.res.clone();
      const stored = new Response(copy.body, copy);
      stored.headers.set("Cache-Control", `private, max-age=${seconds}`);
      c.executionCtx.waitUntil(cache.put(key, stored));
      c.res.headers.set("X-Cache", "MISS");
    }
  });
