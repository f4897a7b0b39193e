import { Hono } from "hono";
import { z } from "zod";
import {
  DEFAULT_KEEP_RESTORED_DAYS,
  DEFAULT_MAX_DAYS_PER_RUN,
  listArchive,
  reimportDay,
  retentionDaysFrom,
  runRetention,
} from "../../shared/analytics/retention";
import type { AppEnv } from "../context";
import { withRole } from "../middleware/guards";
import { jsonBody } from "../validate";

const day = z.iso.date();

const retentionBody = z
  .object({
    /** Days kept hot; RETENTION_DAYS (30 by default) when omitted. */
    retentionDays: z.int().min(1).max(3650).optional(),
    maxDays: z.int().min(1).max(366).default(DEFAULT_MAX_DAYS_PER_RUN),
    /** Only these days (each still has to be older than the cutoff). */
    days: z.array(day).min(1).max(366).optional(),
  })
  .strict();

const reimportBody = z
  .object({
    day,
    keepDays: z.int().min(1).max(365).default(DEFAULT_KEEP_RESTORED_DAYS),
  })
  .strict();

/** Raw event retention (admin only): archive old days to R2, list the archive, re-import a day. */
export const analyticsAdminRoutes = new Hono<AppEnv>()
  .post("/retention", withRole("admin"), jsonBody(retentionBody), async (c) => {
    const body = c.req.valid("json");
    return c.json(
      await runRetention(c.env, {
        retentionDays: body.retentionDays ?? retentionDaysFrom(c.env),
        maxDays: body.maxDays,
        ...(body.days ? { onlyDays: body.days } : {}),
      }),
    );
  })
  .post("/reimport", withRole("admin"), jsonBody(reimportBody), async (c) => {
    const { day, keepDays } = c.req.valid("json");
    return c.json(await reimportDay(c.env, day, { keepDays }));
  })
  .get("/archive", withRole("admin"), async (c) => c.json({ items: await listArchive(c.env.BUNDLES) }));
