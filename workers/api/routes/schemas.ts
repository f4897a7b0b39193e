import { Hono } from "hono";
import { manifestJsonSchema } from "../../shared/domain/manifest";
import type { AppEnv } from "../context";

const capsuleSchema = manifestJsonSchema();

export const schemaRoutes = new Hono<AppEnv>().get("/capsule.json", (c) => {
  c.header("Cache-Control", "public, max-age=3600");
  return c.json(capsuleSchema);
});
