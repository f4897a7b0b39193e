import { Hono } from "hono";
import { z } from "zod";
import { requireAccount, requirePrincipal } from "../../shared/auth/principal";
import { findAccountByHandle } from "../../shared/db/accounts";
import { database } from "../../shared/db/client";
import { invoiceFor, monthBounds, payoutStatement } from "../../shared/economics/invoices";
import { grantAdjustment } from "../../shared/economics/ledger";
import { toMicroUsd } from "../../shared/economics/pricing";
import { AppError } from "../../shared/errors";
import type { AppEnv } from "../context";
import { withAccount, withRole } from "../middleware/guards";
import { jsonBody, pathParams } from "../validate";

const period = z.string().regex(/^\d{4}-(0[1-9]|1[0-2])$/, "YYYY-MM");

/** Invoices, author payouts and (admin) billing adjustments. */
export const invoiceRoutes = new Hono<AppEnv>().get(
  "/:period",
  withAccount,
  pathParams(z.object({ period })),
  async (c) => {
    const principal = requireAccount(c.get("principal"));
    return c.json({
      invoice: await invoiceFor(c.env, database(c.env.DB), principal.accountId, c.req.valid("param").period),
    });
  },
);

export const payoutRoutes = new Hono<AppEnv>().get("/", withAccount, async (c) => {
  const principal = requireAccount(c.get("principal"));
  const minimum = Number(c.env.MIN_PAYOUT_MICRO_USD) || 10_000_000;
  return c.json(await payoutStatement(database(c.env.DB), principal.accountId, minimum));
});

export const adjustmentRoutes = new Hono<AppEnv>().post(
  "/",
  withRole("admin"),
  jsonBody(
    z
      .object({
        account: z.string().min(2).max(39),
        period,
        kind: z.enum(["credit", "discount"]),
        amountUsd: z.number().positive().max(1e7).optional(),
        percent: z.int().min(1).max(100).optional(),
        reason: z.string().min(1).max(500),
      })
      .strict()
      .refine(
        (b) =>
          b.kind === "credit"
            ? b.amountUsd !== undefined && b.percent === undefined
            : b.percent !== undefined && b.amountUsd === undefined,
        {
          message: "a credit takes amountUsd, a discount takes percent",
          path: ["kind"],
        },
      ),
  ),
  async (c) => {
    const body = c.req.valid("json");
    monthBounds(body.period);
    const db = database(c.env.DB);
    const account = await findAccountByHandle(db, body.account);
    if (!account) throw new AppError("NOT_FOUND", `No account ${body.account}`);
    const adjustment = await grantAdjustment(db, requirePrincipal(c.get("principal")), {
      accountId: account.id,
      period: body.period,
      kind: body.kind,
      amountMicroUsd: body.amountUsd === undefined ? 0 : toMicroUsd(body.amountUsd),
      percent: body.percent ?? 0,
      reason: body.reason,
    });
    return c.json({ adjustment }, 201);
  },
);
