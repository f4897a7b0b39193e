import { createMiddleware } from "hono/factory";
import { resolvePrincipal } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import type { AppEnv } from "../context";

/** Gives every request an id (echoed as X-Request-Id) and resolves the caller from the bearer token. */
export const requestContext = createMiddleware<AppEnv>(async (c, next) => {
  const incoming = c.req.header("x-request-id");
  const requestId = incoming && /^[\w.-]{8,64}$/.test(incoming) ? incoming : crypto.randomUUID();
  c.set("requestId", requestId);
  c.set("principal", null);
  c.header("X-Request-Id", requestId);
  c.set("principal", await resolvePrincipal(c.env, database(c.env.DB), c.req.header("authorization")));
  await next();
});
