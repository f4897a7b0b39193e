import { Hono } from "hono";
import { z } from "zod";
import { requireRole } from "../../shared/auth/principal";
import { roleSchema } from "../../shared/auth/roles";
import { createAccount, setRoles } from "../../shared/db/accounts";
import { database } from "../../shared/db/client";
import { HANDLE_PATTERN } from "../../shared/domain/manifest";
import type { AppEnv } from "../context";
import { withRole } from "../middleware/guards";
import { rateLimit } from "../middleware/rate-limit";
import { jsonBody, pathParams } from "../validate";

const handleSchema = z.string().regex(HANDLE_PATTERN, "2-39 lowercase letters, digits or inner hyphens");

export const accountRoutes = new Hono<AppEnv>()
  .post(
    "/",
    rateLimit("SIGNUP_LIMITER"),
    jsonBody(z.object({ handle: handleSchema, email: z.email().max(254) }).strict()),
    async (c) => {
      const created = await createAccount(database(c.env.DB), c.req.valid("json"));
      return c.json(created, 201);
    },
  )
  .post(
    "/:handle/roles",
    withRole("admin"),
    pathParams(z.object({ handle: handleSchema })),
    jsonBody(z.object({ roles: z.array(roleSchema).max(3) }).strict()),
    async (c) => {
      requireRole(c.get("principal"), "admin");
      const account = await setRoles(
        database(c.env.DB),
        c.req.valid("param").handle,
        c.req.valid("json").roles,
      );
      return c.json({ account });
    },
  );
