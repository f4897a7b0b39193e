import { createMiddleware } from "hono/factory";
import { requireScope, resolvePrincipal } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import type { AppEnv } from "../context";

/**
 * Gives every request an id (echoed as X-Request-Id), resolves the caller from the bearer token and holds a
 * scoped API key to its scopes.
 */
export const requestContext = createMiddleware<AppEnv>(async (c, next) => {
  const incoming = c.req.header("x-request-id");
  const requestId = incoming && /^[\w.-]{8,64}$/.test(incoming) ? incoming : crypto.randomUUID();
  c.set("requestId", requestId);
  c.set("principal", null);
  c.header("X-Request-Id", requestId);
  const principal = await resolvePrincipal(c.env, database(c.env.DB), c.req.header("authorization"));
  c.set("principal", principal);
  requireScope(principal, c.req.method, new URL(c.req.url).pathname);
  await next();
});
