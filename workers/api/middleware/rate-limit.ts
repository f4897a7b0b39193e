import { createMiddleware } from "hono/factory";
import { AppError } from "../../shared/errors";
import type { AppEnv } from "../context";

type LimiterName =
  | "SIGNUP_LIMITER"
  | "AUTH_LIMITER"
  | "SUBMIT_LIMITER"
  | "EVENTS_LIMITER"
  | "RATINGS_LIMITER";

/** Limits a route per caller (account when signed in, else client address) with a Workers rate-limit binding. */
export const rateLimit = (limiter: LimiterName) =>
  createMiddleware<AppEnv>(async (c, next) => {
    const principal = c.get("principal");
    const key = principal?.accountId ?? c.req.header("cf-connecting-ip") ?? "anonymous";
    const { success } = await c.env[limiter].limit({ key: `${limiter}:${key}` });
    if (!success) throw new AppError("RATE_LIMITED", "Too many requests; slow down and retry in a minute");
    await next();
  });
