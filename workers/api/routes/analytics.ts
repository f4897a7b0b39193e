import { eq } from "drizzle-orm";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { ingestBodySchema, ingestEvents } from "../../shared/analytics/ingest";
import {
  activeAccounts,
  averageField,
  type GroupBy,
  grouped,
  rangeQuerySchema,
  recentEvents,
  resolveRange,
  series,
  toCsv,
} from "../../shared/analytics/queries";
import { forecastUsage } from "../../shared/analytics/usage-forecast";
import { requireAccount, requirePrincipal, requireRole } from "../../shared/auth/principal";
import { findAccountByHandle } from "../../shared/db/accounts";
import { database } from "../../shared/db/client";
import { capsules, projects } from "../../shared/db/schema";
import { AppError } from "../../shared/errors";
import { formatTraceparent } from "../../shared/observability/trace";
import type { AppEnv } from "../context";
import { cacheFor } from "../middleware/cache";
import { signedIn, withAccount, withRole } from "../middleware/guards";
import { rateLimit } from "../middleware/rate-limit";
import { jsonBody, pathParams, queryParams } from "../validate";

/** Short enough that new events show within the 2 s freshness goal's order of magnitude. */
const ANALYTICS_CACHE_SECONDS = 2;

const SECURITY_TYPES = [
  "soma.security.auth_failed",
  "soma.security.rate_limited",
  "soma.submission.decided",
  "soma.capsule.yanked",
  "soma.account.roles_changed",
  "soma.account.verification_changed",
  "soma.review.reported",
];

/** A CSV download, typed as text so the JSON answer of the same route keeps its type in `hc` clients. */
function csv(c: Context<AppEnv>, rows: Record<string, unknown>[], name: string) {
  return c.text(toCsv(rows), 200, {
    "content-type": "text/csv; charset=utf-8",
    "content-disposition": `attachment; filename="${name}.csv"`,
  });
}

const usageQuery = z
  .object({
    from: z.iso.date(),
    to: z.iso.date(),
    groupBy: z.enum(["day", "capsule", "project", "model"]).default("day"),
    account: z.string().max(39).optional(),
  })
  .strict();

const forecastQuery = z
  .object({
    horizonDays: z.coerce.number().int().min(1).max(366).default(30),
    scope: z.string().max(80).optional(),
    historyDays: z.coerce.number().int().min(14).max(731).default(180),
  })
  .strict();

/** Event ingestion for integrations. */
export const eventRoutes = new Hono<AppEnv>().post(
  "/",
  withAccount,
  rateLimit("EVENTS_LIMITER"),
  bodyLimit({
    maxSize: 4 * 1024 * 1024,
    onError: () => {
      throw new AppError("PAYLOAD_TOO_LARGE", "Send at most 4 MiB of events per request");
    },
  }),
  jsonBody(ingestBodySchema),
  async (c) => {
    const principal = requireAccount(c.get("principal"));
    const traceparent = formatTraceparent(c.get("trace"));
    return c.json(await ingestEvents(c.env, principal.accountId, c.req.valid("json"), traceparent), 202);
  },
);

/** Token usage from recorded events. */
export const usageRoutes = new Hono<AppEnv>().get("/", withAccount, queryParams(usageQuery), async (c) => {
  const principal = requireAccount(c.get("principal"));
  const query = c.req.valid("query");
  let accountId = principal.accountId;
  if (query.account && query.account !== principal.handle) {
    requireRole(principal, "admin");
    const account = await findAccountByHandle(database(c.env.DB), query.account);
    if (!account) throw new AppError("NOT_FOUND", `No account ${query.account}`);
    accountId = account.id;
  }
  const to = new Date(`${query.to}T00:00:00Z`);
  to.setUTCDate(to.getUTCDate() + 1);
  const range = resolveRange({ from: `${query.from}T00:00:00Z`, to: to.toISOString(), interval: "day" });
  const items = await grouped(
    c.env,
    range,
    { accountId, types: ["soma.usage.tokens"] },
    query.groupBy as GroupBy,
  );
  return c.json({
    items: items.map(({ key, inputTokens, outputTokens, totalTokens, events }) => ({
      key,
      inputTokens,
      outputTokens,
      totalTokens,
      events,
    })),
  });
});

/**
 * Token use and spend for the next days from recorded history (weekly Holt-Winters with prediction intervals)
 * and a recommended budget. `scope` is `project:<id>` (a project of the caller's) or, for admins, `account:<handle>`.
 */
export const forecastRoutes = new Hono<AppEnv>().get(
  "/",
  withAccount,
  queryParams(forecastQuery),
  async (c) => {
    const principal = requireAccount(c.get("principal"));
    const query = c.req.valid("query");
    const db = database(c.env.DB);
    let filter: { accountId?: string; projectId?: string } = { accountId: principal.accountId };
    if (query.scope?.startsWith("project:")) {
      const projectId = query.scope.slice("project:".length);
      const [project] = await db.select().from(projects).where(eq(projects.id, projectId)).limit(1);
      if (!project || (project.ownerId !== principal.accountId && !principal.roles.includes("admin"))) {
        throw new AppError("NOT_FOUND", `No project ${projectId}`);
      }
      // The owner too: a project id is no secret, and only the owner's own events describe its project.
      filter = { projectId, accountId: project.ownerId };
    } else if (query.scope?.startsWith("account:")) {
      requireRole(principal, "admin");
      const account = await findAccountByHandle(db, query.scope.slice("account:".length));
      if (!account) throw new AppError("NOT_FOUND", `No account ${query.scope}`);
      filter = { accountId: account.id };
    } else if (query.scope !== undefined) {
      throw new AppError("VALIDATION_FAILED", "scope is project:<id> or account:<handle>", {
        issues: [{ path: "scope", message: "unknown scope" }],
      });
    }
    const forecast = await forecastUsage(c.env, filter, {
      horizonDays: query.horizonDays,
      historyDays: query.historyDays,
    });
    return c.json(forecast);
  },
);

/** Dashboards data. Each view takes from, to, interval; tables export as CSV with format=csv. */
export const analyticsRoutes = new Hono<AppEnv>()
  .get("/platform", signedIn, queryParams(rangeQuerySchema), cacheFor(ANALYTICS_CACHE_SECONDS), async (c) => {
    const query = c.req.valid("query");
    const range = resolveRange(query);
    const db = c.env.DB;
    const [accounts, capsuleCount, installs, executions, top, active] = await Promise.all([
      db.prepare("SELECT count(*) AS n FROM accounts").first<{ n: number }>(),
      db.prepare("SELECT count(*) AS n FROM capsules").first<{ n: number }>(),
      series(c.env, range, { types: ["soma.install.created"] }),
      series(c.env, range, { types: ["soma.usage.tokens"] }),
      grouped(c.env, range, { types: ["soma.usage.tokens"] }, "capsule", 10),
      activeAccounts(c.env, range),
    ]);
    const topCapsules = top
      .filter((t) => t.key !== "")
      .map((t) => ({
        capsule: t.key,
        executions: t.events,
        failures: t.failures,
        errorRate: t.events ? t.failures / t.events : 0,
        totalTokens: t.totalTokens,
      }));
    if (query.format === "csv") return csv(c, topCapsules, "top-capsules");
    const totalExec = executions.reduce((n, p) => n + p.events, 0);
    const totalFail = executions.reduce((n, p) => n + p.failures, 0);
    return c.json({
      range: { from: range.from.toISOString(), to: range.to.toISOString(), interval: range.interval },
      totals: {
        accounts: accounts?.n ?? 0,
        activeAccounts: active,
        capsules: capsuleCount?.n ?? 0,
        installs: installs.reduce((n, p) => n + p.events, 0),
        executions: totalExec,
        errorRate: totalExec ? totalFail / totalExec : 0,
        tokens: executions.reduce((n, p) => n + p.totalTokens, 0),
      },
      installs: installs.map((p) => ({ t: p.t, installs: p.events })),
      executions: executions.map((p) => ({
        t: p.t,
        executions: p.events,
        failures: p.failures,
        errorRate: p.events ? p.failures / p.events : 0,
        tokens: p.totalTokens,
      })),
      topCapsules,
    });
  })
  .get(
    "/capsules/:ns/:name",
    signedIn,
    pathParams(
      z.object({
        ns: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/),
        name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/),
      }),
    ),
    queryParams(rangeQuerySchema),
    cacheFor(ANALYTICS_CACHE_SECONDS),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { ns, name } = c.req.valid("param");
      const capsule = `${ns}/${name}`;
      const [row] = await database(c.env.DB)
        .select({ ownerId: capsules.ownerId })
        .from(capsules)
        .where(eq(capsules.name, capsule))
        .limit(1);
      if (!row || (row.ownerId !== principal.accountId && !principal.roles.includes("admin"))) {
        throw new AppError("NOT_FOUND", `No capsule ${capsule} of yours`);
      }
      const query = c.req.valid("query");
      const range = resolveRange(query);
      const [executions, installs, ratings] = await Promise.all([
        series(c.env, range, { capsule, types: ["soma.usage.tokens"] }),
        series(c.env, range, { capsule, types: ["soma.install.created"] }),
        averageField(c.env, range, "soma.rating.created", "stars", { capsule }),
      ]);
      const rows = executions.map((p) => ({
        t: p.t,
        executions: p.events,
        successRate: p.events ? (p.events - p.failures) / p.events : null,
        averageTokens: p.events ? Math.round(p.totalTokens / p.events) : null,
      }));
      if (query.format === "csv") return csv(c, rows, `${ns}-${name}-executions`);
      const total = executions.reduce((n, p) => n + p.events, 0);
      const failures = executions.reduce((n, p) => n + p.failures, 0);
      const tokens = executions.reduce((n, p) => n + p.totalTokens, 0);
      return c.json({
        capsule,
        range: { from: range.from.toISOString(), to: range.to.toISOString(), interval: range.interval },
        totals: {
          executions: total,
          successRate: total ? (total - failures) / total : null,
          averageTokens: total ? Math.round(tokens / total) : null,
          installs: installs.reduce((n, p) => n + p.events, 0),
        },
        executions: rows,
        installs: installs.map((p) => ({ t: p.t, installs: p.events })),
        ratings: ratings.map((r) => ({ t: `${r.bucket.replace(" ", "T")}Z`, average: r.value, count: r.n })),
      });
    },
  )
  .get("/me", withAccount, queryParams(rangeQuerySchema), cacheFor(ANALYTICS_CACHE_SECONDS), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const query = c.req.valid("query");
    const range = resolveRange(query);
    const [usage, usageByCapsule, chargesByCapsule, forecast] = await Promise.all([
      series(c.env, range, { accountId: principal.accountId }),
      grouped(c.env, range, { accountId: principal.accountId, types: ["soma.usage.tokens"] }, "capsule", 50),
      grouped(
        c.env,
        range,
        { accountId: principal.accountId, types: ["soma.charge.recorded"] },
        "capsule",
        50,
      ),
      forecastUsage(c.env, { accountId: principal.accountId }, { horizonDays: 30, historyDays: 180 }),
    ]);
    // Spend per capsule is what the account was charged for it, never an amount an integration noted on usage.
    const spent = new Map(chargesByCapsule.map((g) => [g.key, g.spendMicroUsd]));
    const byCapsule = usageByCapsule.map(
      ({ key, inputTokens, outputTokens, totalTokens, events, failures }) => ({
        key,
        inputTokens,
        outputTokens,
        totalTokens,
        events,
        failures,
        spendMicroUsd: spent.get(key) ?? 0,
        /** The same as spendMicroUsd (the name earlier clients read). */
        amountMicroUsd: spent.get(key) ?? 0,
      }),
    );
    if (query.format === "csv") return csv(c, byCapsule, "my-usage-by-capsule");
    return c.json({
      range: { from: range.from.toISOString(), to: range.to.toISOString(), interval: range.interval },
      totals: {
        tokens: usage.reduce((n, p) => n + p.totalTokens, 0),
        spendMicroUsd: usage.reduce((n, p) => n + p.spendMicroUsd, 0),
        earningsMicroUsd: usage.reduce((n, p) => n + p.earningsMicroUsd, 0),
        events: usage.reduce((n, p) => n + p.events, 0),
      },
      usage: usage.map((p) => ({
        t: p.t,
        tokens: p.totalTokens,
        inputTokens: p.inputTokens,
        outputTokens: p.outputTokens,
        spendMicroUsd: p.spendMicroUsd,
        earningsMicroUsd: p.earningsMicroUsd,
      })),
      byCapsule,
      forecast,
    });
  })
  .get(
    "/admin",
    withRole("admin"),
    queryParams(rangeQuerySchema),
    cacheFor(ANALYTICS_CACHE_SECONDS),
    async (c) => {
      const query = c.req.valid("query");
      const range = resolveRange(query);
      const [tenants, security] = await Promise.all([
        grouped(c.env, range, {}, "account", 200),
        recentEvents(c.env, range, SECURITY_TYPES, 200),
      ]);
      const handles = new Map(
        (
          await c.env.DB.prepare("SELECT id, handle FROM accounts").all<{ id: string; handle: string }>()
        ).results.map((r) => [r.id, r.handle]),
      );
      const perTenant = tenants
        .filter((t) => t.key !== "")
        .map((t) => ({
          accountId: t.key,
          handle: handles.get(t.key) ?? null,
          events: t.events,
          totalTokens: t.totalTokens,
          spendMicroUsd: t.spendMicroUsd,
          revenueMicroUsd: t.revenueMicroUsd,
          earningsMicroUsd: t.earningsMicroUsd,
        }));
      if (query.format === "csv") return csv(c, perTenant, "tenants");
      return c.json({
        range: { from: range.from.toISOString(), to: range.to.toISOString(), interval: range.interval },
        tenants: perTenant,
        securityEvents: security.map((e) => ({ ...e, data: JSON.parse(e.data) as unknown })),
      });
    },
  );
