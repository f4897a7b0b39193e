import { Hono } from "hono";
import { authJwks } from "../../shared/auth/tokens";
import { database } from "../../shared/db/client";
import { publishedSigningKeys } from "../../shared/signing/published-keys";
import type { AppEnv } from "../context";

export const wellKnownRoutes = new Hono<AppEnv>()
  .get("/jwks.json", async (c) => {
    c.header("Cache-Control", "public, max-age=300");
    return c.json(await authJwks(c.env, database(c.env.DB)));
  })
  .get("/soma/signing-key.pem", async (c) => {
    const { current } = await publishedSigningKeys(c.env, database(c.env.DB));
    c.header("Cache-Control", "public, max-age=300");
    return c.body(current.publicPem, 200, { "Content-Type": "application/x-pem-file" });
  })
  .get("/soma/keys.json", async (c) => {
    const { keys } = await publishedSigningKeys(c.env, database(c.env.DB));
    c.header("Cache-Control", "public, max-age=300");
    return c.json({ keys });
  });
