import { Hono } from "hono";
import { z } from "zod";
import { requireAccount } from "../../shared/auth/principal";
import { accountBudget, resolveScope } from "../../shared/budgets";
import { database } from "../../shared/db/client";
import { AppError } from "../../shared/errors";
import { projectFor, unwrap } from "../../shared/kamachiq/projects";
import { formatTraceparent } from "../../shared/observability/trace";
import type { AppEnv } from "../context";
import { withAccount } from "../middleware/guards";
import { jsonBody, pathParams } from "../validate";

const scopeParams = z.object({ scope: z.string().min(1).max(80) });

const budgetBody = z
  .object({
    limitTokens: z.int().min(1).max(1e12).optional(),
    limitUsd: z.number().positive().max(1e9).optional(),
    period: z.literal("month").default("month"),
    softPct: z.int().min(1).max(100).default(80),
    hardPct: z.int().min(1).max(200).default(100),
    rollover: z.boolean().default(false),
  })
  .strict()
  .refine((b) => b.limitTokens !== undefined || b.limitUsd !== undefined, {
    message: "set limitTokens or limitUsd",
    path: ["limitTokens"],
  })
  .refine((b) => b.softPct <= b.hardPct, { message: "softPct must not exceed hardPct", path: ["softPct"] });

/** Budgets: per account (a monthly limit across every project, enforced at reservation) or per project. */
export const budgetRoutes = new Hono<AppEnv>()
  .put("/:scope", withAccount, pathParams(scopeParams), jsonBody(budgetBody), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const db = database(c.env.DB);
    const scope = await resolveScope(db, principal, c.req.valid("param").scope);
    const body = c.req.valid("json");
    if (scope.kind === "project") {
      if (body.limitTokens === undefined || body.limitUsd !== undefined || body.rollover) {
        throw new AppError(
          "VALIDATION_FAILED",
          "A project budget is a token limit (limitTokens), without rollover",
          {
            issues: [
              {
                path: "limitTokens",
                message: "required for projects; limitUsd and rollover are account-only",
              },
            ],
          },
        );
      }
      const stub = await projectFor(c.env, db, principal, scope.projectId, "manage");
      const project = unwrap(
        await stub.setBudget(body.limitTokens, body.softPct, body.hardPct, formatTraceparent(c.get("trace"))),
      );
      // The project's limitTokens is its cap in force: the limit times hardPct.
      return c.json({
        budget: {
          scope: `project:${project.id}`,
          softPct: body.softPct,
          hardPct: body.hardPct,
          ...project.budget,
        },
      });
    }
    const status = await accountBudget(c.env, scope.accountId).configure(scope.accountId, {
      limitTokens: body.limitTokens ?? null,
      // Money is integer micro-USD everywhere; the API takes dollars for convenience.
      limitMicroUsd: body.limitUsd === undefined ? null : Math.round(body.limitUsd * 1_000_000),
      period: body.period,
      softPct: body.softPct,
      hardPct: body.hardPct,
      rollover: body.rollover,
    });
    return c.json({ budget: status });
  })
  .get("/:scope", withAccount, pathParams(scopeParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const db = database(c.env.DB);
    const scope = await resolveScope(db, principal, c.req.valid("param").scope);
    if (scope.kind === "project") {
      const project = unwrap(await (await projectFor(c.env, db, principal, scope.projectId)).snapshot());
      return c.json({ budget: { scope: `project:${project.id}`, ...project.budget } });
    }
    return c.json({ budget: await accountBudget(c.env, scope.accountId).status(scope.accountId) });
  });
