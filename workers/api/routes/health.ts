import { Hono } from "hono";
import { checkHealth } from "../../shared/health";
import type { AppEnv } from "../context";

export const healthRoutes = new Hono<AppEnv>().get("/healthz", async (c) => {
  const health = await checkHealth(c.env);
  return c.json(health, health.ok ? 200 : 503);
});
