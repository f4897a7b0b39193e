import { Hono } from "hono";
import { z } from "zod";
import { requireAccount, requirePrincipal, requireRole } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import { flushOutboxSoon } from "../../shared/events/outbox";
import {
  decideSubmission,
  getSubmission,
  listOwnSubmissions,
  reviewQueue,
} from "../../shared/marketplace/submissions";
import type { AppEnv } from "../context";
import { signedIn, withAccount, withRole } from "../middleware/guards";
import { jsonBody, pathParams, queryParams } from "../validate";

const idParams = z.object({ id: z.string().regex(/^sub_[a-f0-9]{32}$/, "not a submission id") });
const limitQuery = z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) }).strict();

/** Submissions and the human review queue. */
export const reviewRoutes = new Hono<AppEnv>()
  .get("/submissions", withAccount, queryParams(limitQuery), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const items = await listOwnSubmissions(
      database(c.env.DB),
      principal.accountId,
      c.req.valid("query").limit,
    );
    return c.json({ items });
  })
  .get("/submissions/:id", signedIn, pathParams(idParams), async (c) => {
    const principal = requirePrincipal(c.get("principal"));
    return c.json({
      submission: await getSubmission(database(c.env.DB), principal, c.req.valid("param").id),
    });
  })
  .get("/review-queue", withRole("reviewer"), queryParams(limitQuery), async (c) => {
    requireRole(c.get("principal"), "reviewer");
    return c.json({ items: await reviewQueue(database(c.env.DB), c.req.valid("query").limit) });
  })
  .post(
    "/submissions/:id/decision",
    withRole("reviewer"),
    pathParams(idParams),
    jsonBody(
      z
        .object({
          decision: z.enum(["approve", "reject", "request_changes"]),
          notes: z.string().max(4000).default(""),
        })
        .strict()
        .refine((b) => b.decision === "approve" || b.notes.trim().length > 0, {
          message: "explain a rejection or a change request in notes",
          path: ["notes"],
        }),
    ),
    async (c) => {
      const principal = requireRole(c.get("principal"), "reviewer");
      const db = database(c.env.DB);
      const submission = await decideSubmission(
        c.env,
        db,
        principal,
        c.req.valid("param").id,
        c.req.valid("json"),
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ submission });
    },
  );
