import { Hono } from "hono";
import { z } from "zod";
import { requireAccount, requirePrincipal } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import { CATEGORIES, PRICING_MODELS, semverSchema } from "../../shared/domain/manifest";
import { priceChange, pricingView } from "../../shared/economics/prices";
import { toMicroUsd } from "../../shared/economics/pricing";
import { setAuthorSharePct } from "../../shared/economics/revenue-share";
import { AppError } from "../../shared/errors";
import { flushOutboxSoon } from "../../shared/events/outbox";
import {
  type ArtifactKind,
  capsuleDetail,
  deprecateVersion,
  publishedArtifact,
  requireOwner,
  SORTS,
  searchCatalog,
  yankVersion,
} from "../../shared/marketplace/catalog";
import { bundleLimits } from "../../shared/marketplace/limits";
import { submitBundle } from "../../shared/marketplace/submissions";
import type { AppEnv } from "../context";
import { cacheFor } from "../middleware/cache";
import { signedIn, withAccount, withRole } from "../middleware/guards";
import { rateLimit } from "../middleware/rate-limit";
import { readBodyBounded } from "../request-body";
import { jsonBody, pathParams, queryParams } from "../validate";

/**
 * Catalog pages are public and change only on publish: a few seconds of caching absorbs browsing bursts. Text
 * searches skip the Cache API: each isolate reuses a query's ranking for as long (search-memo.ts), which serves
 * every page size and cursor of it, where a Cache API entry serves one URL and costs a write per miss.
 */
const CATALOG_CACHE_SECONDS = 5;
const textSearch = (url: URL) => (url.searchParams.get("q") ?? "").trim() !== "";

const segment = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "not a valid name segment");
const capsuleParams = z.object({ ns: segment, name: segment });
const versionParams = capsuleParams.extend({ version: semverSchema });

const catalogQuery = z
  .object({
    q: z.string().max(200).optional(),
    category: z.enum(CATEGORIES).optional(),
    tag: z.string().max(32).optional(),
    pricing: z.enum(["free", "paid"]).optional(),
    verified: z
      .enum(["true", "false"])
      .transform((v) => v === "true")
      .optional(),
    sort: z.enum(SORTS).optional(),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    cursor: z.string().max(200).optional(),
  })
  .strict();

async function serveArtifact(
  env: Env,
  params: z.output<typeof versionParams>,
  kind: ArtifactKind,
): Promise<Response> {
  const artifact = await publishedArtifact(
    env,
    database(env.DB),
    `${params.ns}/${params.name}`,
    params.version,
    kind,
  );
  const headers: Record<string, string> = {
    "Content-Type": artifact.contentType,
    "Content-Length": String(artifact.size),
    "Cache-Control": "public, max-age=31536000, immutable",
  };
  if (artifact.sha256) headers["X-Content-SHA256"] = artifact.sha256;
  return new Response(artifact.body, { headers });
}

export const capsuleRoutes = new Hono<AppEnv>()
  .post("/", withAccount, rateLimit("SUBMIT_LIMITER"), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const type = (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
    if (type !== "application/gzip" && type !== "application/x-gzip") {
      throw new AppError(
        "UNSUPPORTED_MEDIA_TYPE",
        "Upload the bundle as the body with Content-Type: application/gzip",
      );
    }
    const bytes = await readBodyBounded(c.req.raw, bundleLimits(c.env).maxCompressedBytes);
    const submission = await submitBundle(c.env, database(c.env.DB), principal, bytes);
    flushOutboxSoon(database(c.env.DB), c.env, c.executionCtx);
    return c.json({ submission }, 201);
  })
  .get(
    "/",
    queryParams(catalogQuery),
    cacheFor(CATALOG_CACHE_SECONDS, { shared: true, skip: textSearch }),
    async (c) => {
      return c.json(await searchCatalog(database(c.env.DB), c.req.valid("query")));
    },
  )
  .get("/:ns/:name", pathParams(capsuleParams), async (c) => {
    const { ns, name } = c.req.valid("param");
    return c.json(await capsuleDetail(database(c.env.DB), `${ns}/${name}`));
  })
  .get("/:ns/:name/versions/:version/bundle", pathParams(versionParams), (c) =>
    serveArtifact(c.env, c.req.valid("param"), "bundle"),
  )
  .get("/:ns/:name/versions/:version/bundle.sig", pathParams(versionParams), (c) =>
    serveArtifact(c.env, c.req.valid("param"), "bundle.sig"),
  )
  .get("/:ns/:name/versions/:version/attestation", pathParams(versionParams), (c) =>
    serveArtifact(c.env, c.req.valid("param"), "attestation"),
  )
  .get("/:ns/:name/versions/:version/sbom", pathParams(versionParams), (c) =>
    serveArtifact(c.env, c.req.valid("param"), "sbom"),
  )
  .get("/:ns/:name/pricing", pathParams(capsuleParams), async (c) => {
    const { ns, name } = c.req.valid("param");
    const db = database(c.env.DB);
    await capsuleDetail(db, `${ns}/${name}`);
    return c.json({ pricing: await pricingView(db, `${ns}/${name}`) });
  })
  .put(
    "/:ns/:name/revenue-share",
    withRole("admin"),
    pathParams(capsuleParams),
    jsonBody(z.object({ authorSharePct: z.int().min(0).max(100) }).strict()),
    async (c) => {
      const { ns, name } = c.req.valid("param");
      const db = database(c.env.DB);
      const share = await setAuthorSharePct(
        db,
        `${ns}/${name}`,
        c.req.valid("json").authorSharePct,
        requirePrincipal(c.get("principal")),
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ revenueShare: share });
    },
  )
  .put(
    "/:ns/:name/pricing",
    signedIn,
    pathParams(capsuleParams),
    jsonBody(
      z
        .object({ model: z.enum(PRICING_MODELS), amountUsd: z.number().min(0).max(10_000) })
        .strict()
        .refine((p) => (p.model === "free") === (p.amountUsd === 0), {
          message: "free capsules cost 0; priced capsules need amountUsd > 0",
          path: ["amountUsd"],
        }),
    ),
    async (c) => {
      const { ns, name } = c.req.valid("param");
      const db = database(c.env.DB);
      const capsule = `${ns}/${name}`;
      await requireOwner(db, requirePrincipal(c.get("principal")), capsule);
      const body = c.req.valid("json");
      const change = await priceChange(db, capsule, {
        model: body.model,
        amountMicroUsd: toMicroUsd(body.amountUsd),
      });
      if (change) await db.batch(change.statements as unknown as Parameters<typeof db.batch>[0]);
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ pricing: await pricingView(db, capsule), changed: change !== null });
    },
  )
  .post(
    "/:ns/:name/versions/:version/deprecate",
    signedIn,
    pathParams(versionParams),
    jsonBody(z.object({ message: z.string().min(1).max(500) }).strict()),
    async (c) => {
      const { ns, name, version } = c.req.valid("param");
      const db = database(c.env.DB);
      const result = await deprecateVersion(
        db,
        requirePrincipal(c.get("principal")),
        `${ns}/${name}`,
        version,
        c.req.valid("json").message,
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ version: result });
    },
  )
  .post(
    "/:ns/:name/versions/:version/yank",
    signedIn,
    pathParams(versionParams),
    jsonBody(z.object({ reason: z.string().min(1).max(500) }).strict()),
    async (c) => {
      const { ns, name, version } = c.req.valid("param");
      const db = database(c.env.DB);
      const result = await yankVersion(
        db,
        requirePrincipal(c.get("principal")),
        `${ns}/${name}`,
        version,
        c.req.valid("json").reason,
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ version: result });
    },
  );
