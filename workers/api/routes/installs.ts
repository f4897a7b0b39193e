import { Hono } from "hono";
import { z } from "zod";
import { requireAccount } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import {
  capsuleNameSchema,
  PRICING_MODELS,
  permissionSchema,
  semverRangeSchema,
} from "../../shared/domain/manifest";
import { flushOutboxSoon } from "../../shared/events/outbox";
import { createInstall, listInstalls, removeInstall } from "../../shared/marketplace/installs";
import type { AppEnv } from "../context";
import { withAccount } from "../middleware/guards";
import { jsonBody, pathParams } from "../validate";

export const installRoutes = new Hono<AppEnv>()
  .post(
    "/",
    withAccount,
    jsonBody(
      z
        .object({
          capsule: capsuleNameSchema,
          range: semverRangeSchema.default("*"),
          acceptPermissions: z.array(permissionSchema).max(64).default([]),
          acceptPrices: z
            .array(
              z
                .object({
                  capsule: capsuleNameSchema,
                  model: z.enum(PRICING_MODELS),
                  amountUsd: z.number().min(0).max(10_000),
                })
                .strict(),
            )
            .max(64)
            .optional(),
          budgetTokens: z.int().min(0).max(1_000_000_000).optional(),
        })
        .strict(),
    ),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const db = database(c.env.DB);
      const { install, warnings } = await createInstall(c.env, db, principal.accountId, c.req.valid("json"));
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ install, lock: install.lock, warnings }, 201);
    },
  )
  .get("/", withAccount, async (c) => {
    const principal = requireAccount(c.get("principal"));
    return c.json({ items: await listInstalls(database(c.env.DB), principal.accountId) });
  })
  .delete(
    "/:id",
    withAccount,
    pathParams(z.object({ id: z.string().regex(/^ins_[a-f0-9]{32}$/, "not an install id") })),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const db = database(c.env.DB);
      await removeInstall(db, principal.accountId, c.req.valid("param").id);
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.body(null, 204);
    },
  );
