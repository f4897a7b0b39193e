import { Hono } from "hono";
import { z } from "zod";
import { readAuditLog } from "../../shared/audit/log";
import { database } from "../../shared/db/client";
import { listDeadLetters, REPLAYABLE_QUEUES, replayDeadLetters } from "../../shared/dead-letters";
import type { AppEnv } from "../context";
import { withRole } from "../middleware/guards";
import { jsonBody, queryParams } from "../validate";

/** Operator tools (admin only). */
export const adminRoutes = new Hono<AppEnv>()
  .get(
    "/audit",
    withRole("admin"),
    queryParams(
      z
        .object({
          after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        })
        .strict(),
    ),
    async (c) => c.json(await readAuditLog(database(c.env.DB), c.req.valid("query"))),
  )
  .get(
    "/dead-letters",
    withRole("admin"),
    queryParams(
      z
        .object({
          queue: z.enum(REPLAYABLE_QUEUES).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        })
        .strict(),
    ),
    async (c) => {
      const { queue, limit } = c.req.valid("query");
      return c.json({ items: await listDeadLetters(database(c.env.DB), queue, limit) });
    },
  )
  .post(
    "/dead-letters/replay",
    withRole("admin"),
    jsonBody(
      z
        .object({
          queue: z.enum(REPLAYABLE_QUEUES).default("soma-events"),
          limit: z.int().min(1).max(10_000).default(1000),
        })
        .strict(),
    ),
    async (c) => {
      const { queue, limit } = c.req.valid("json");
      const result = await replayDeadLetters(
        database(c.env.DB),
        { "soma-events": c.env.EVENTS, "soma-agent-tasks": c.env.AGENT_TASKS },
        queue,
        limit,
      );
      return c.json(result);
    },
  );
