import { Hono } from "hono";
import { z } from "zod";
import { principalFromApiKey } from "../../shared/auth/principal";
import { issueAccessToken } from "../../shared/auth/tokens";
import { database } from "../../shared/db/client";
import { AppError } from "../../shared/errors";
import type { AppEnv } from "../context";
import { rateLimit } from "../middleware/rate-limit";
import { jsonBody } from "../validate";

export const authRoutes = new Hono<AppEnv>().post(
  "/token",
  rateLimit("AUTH_LIMITER"),
  jsonBody(z.object({ apiKey: z.string().min(1).max(200) }).strict()),
  async (c) => {
    const db = database(c.env.DB);
    const principal = await principalFromApiKey(db, c.req.valid("json").apiKey);
    if (!principal?.accountId || !principal.handle)
      throw new AppError("UNAUTHENTICATED", "The API key is unknown or revoked");
    const { token, expiresIn } = await issueAccessToken(c.env, db, {
      sub: principal.accountId,
      handle: principal.handle,
      roles: principal.roles,
      scopes: principal.scopes,
    });
    return c.json({ accessToken: token, tokenType: "Bearer", expiresIn });
  },
);
