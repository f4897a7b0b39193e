import { Hono } from "hono";
import { z } from "zod";
import { requireAccount, requirePrincipal, requireRole } from "../../shared/auth/principal";
import {
  addCollectionItem,
  createCollection,
  deleteCollection,
  getCollection,
  listCollections,
  listFeatured,
  MAX_FEATURED,
  removeCollectionItem,
  setFeatured,
  updateCollection,
} from "../../shared/community/collections";
import { trending, usedTogether } from "../../shared/community/discovery";
import { moderateReview, moderationQueue, reportReview } from "../../shared/community/moderation";
import {
  deleteRating,
  listReviews,
  putRating,
  REVIEW_SORTS,
  ratingSummary,
  replyToReview,
  voteOnReview,
} from "../../shared/community/reviews";
import { TRENDING_DECAY_DAYS, TRENDING_WINDOW_DAYS } from "../../shared/community/scoring";
import { database } from "../../shared/db/client";
import { capsuleNameSchema } from "../../shared/domain/manifest";
import { flushOutboxSoon } from "../../shared/events/outbox";
import type { AppEnv } from "../context";
import { cacheFor } from "../middleware/cache";
import { signedIn, withAccount, withRole } from "../middleware/guards";
import { rateLimit } from "../middleware/rate-limit";
import { jsonBody, pathParams, queryParams } from "../validate";

/** Trending and used-together scan a week of installs; a minute of staleness is invisible on a shelf. */
const DISCOVERY_CACHE_SECONDS = 60;

const communityWrites = rateLimit("RATINGS_LIMITER");

const segment = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "not a valid name segment");
const capsuleParams = z.object({ ns: segment, name: segment });
const reviewParams = capsuleParams.extend({
  reviewId: z.string().regex(/^rev_[a-f0-9]{32}$/, "not a review id"),
});
const collectionParams = z.object({ id: z.string().regex(/^col_[a-f0-9]{32}$/, "not a collection id") });

/** User text is stored exactly as written (never trimmed or escaped); it only has to say something. */
const userText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((text) => text.trim().length > 0, "must not be blank");

const pageQuery = (max: number, fallback: number) =>
  z
    .object({
      limit: z.coerce.number().int().min(1).max(max).default(fallback),
      cursor: z.string().max(200).optional(),
    })
    .strict();

const nameOf = (params: { ns: string; name: string }) => `${params.ns}/${params.name}`;

/** Ratings, reviews and used-together, under /v1/capsules/:ns/:name. */
export const capsuleCommunityRoutes = new Hono<AppEnv>()
  .put(
    "/:ns/:name/rating",
    withAccount,
    communityWrites,
    pathParams(capsuleParams),
    jsonBody(z.object({ stars: z.int().min(1).max(5), text: userText(5000).nullable().optional() }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const db = database(c.env.DB);
      const { stars, text } = c.req.valid("json");
      const { review, created } = await putRating(db, principal.accountId, nameOf(c.req.valid("param")), {
        stars,
        text: text ?? null,
      });
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ review }, created ? 201 : 200);
    },
  )
  .delete("/:ns/:name/rating", withAccount, communityWrites, pathParams(capsuleParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const db = database(c.env.DB);
    await deleteRating(db, principal.accountId, nameOf(c.req.valid("param")));
    flushOutboxSoon(db, c.env, c.executionCtx);
    return c.body(null, 204);
  })
  .get("/:ns/:name/rating", pathParams(capsuleParams), async (c) => {
    return c.json(await ratingSummary(database(c.env.DB), nameOf(c.req.valid("param"))));
  })
  .get(
    "/:ns/:name/reviews",
    pathParams(capsuleParams),
    queryParams(pageQuery(50, 20).extend({ sort: z.enum(REVIEW_SORTS).default("helpful") })),
    async (c) => {
      return c.json(
        await listReviews(database(c.env.DB), nameOf(c.req.valid("param")), c.req.valid("query")),
      );
    },
  )
  .post(
    "/:ns/:name/reviews/:reviewId/reply",
    withAccount,
    communityWrites,
    pathParams(reviewParams),
    jsonBody(z.object({ text: userText(2000) }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const db = database(c.env.DB);
      const params = c.req.valid("param");
      const { review, created } = await replyToReview(
        db,
        principal.accountId,
        nameOf(params),
        params.reviewId,
        c.req.valid("json").text,
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ review }, created ? 201 : 200);
    },
  )
  .post(
    "/:ns/:name/reviews/:reviewId/report",
    withAccount,
    communityWrites,
    pathParams(reviewParams),
    jsonBody(z.object({ reason: userText(500) }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const db = database(c.env.DB);
      const params = c.req.valid("param");
      const report = await reportReview(
        db,
        principal.accountId,
        nameOf(params),
        params.reviewId,
        c.req.valid("json").reason,
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ report }, 201);
    },
  )
  .post(
    "/:ns/:name/reviews/:reviewId/vote",
    withAccount,
    communityWrites,
    pathParams(reviewParams),
    jsonBody(z.object({ helpful: z.boolean() }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const params = c.req.valid("param");
      const vote = await voteOnReview(
        database(c.env.DB),
        principal.accountId,
        nameOf(params),
        params.reviewId,
        c.req.valid("json").helpful,
      );
      return c.json({ vote });
    },
  )
  .get(
    "/:ns/:name/used-together",
    pathParams(capsuleParams),
    queryParams(z.object({ limit: z.coerce.number().int().min(1).max(50).default(10) }).strict()),
    cacheFor(DISCOVERY_CACHE_SECONDS, { shared: true }),
    async (c) => {
      const items = await usedTogether(
        database(c.env.DB),
        nameOf(c.req.valid("param")),
        c.req.valid("query").limit,
      );
      return c.json({ items });
    },
  );

/** The review moderation queue, for reviewers and admins. */
export const moderationRoutes = new Hono<AppEnv>()
  .get("/", withRole("reviewer"), queryParams(pageQuery(100, 50)), async (c) => {
    requireRole(c.get("principal"), "reviewer");
    return c.json(await moderationQueue(database(c.env.DB), c.req.valid("query")));
  })
  .post(
    "/:reviewId",
    withRole("reviewer"),
    pathParams(z.object({ reviewId: z.string().regex(/^rev_[a-f0-9]{32}$/, "not a review id") })),
    jsonBody(z.object({ decision: z.enum(["restore", "remove"]) }).strict()),
    async (c) => {
      const principal = requireRole(c.get("principal"), "reviewer");
      const db = database(c.env.DB);
      const review = await moderateReview(
        db,
        principal,
        c.req.valid("param").reviewId,
        c.req.valid("json").decision,
      );
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ review });
    },
  );

const visibility = z.enum(["public", "private"]);

/** Collections: curated by admins, or an account's own, public or private. */
export const collectionRoutes = new Hono<AppEnv>()
  .post(
    "/",
    signedIn,
    communityWrites,
    jsonBody(
      z
        .object({
          title: userText(100),
          description: z.string().max(1000).default(""),
          visibility,
          curated: z.boolean().default(false),
        })
        .strict(),
    ),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const collection = await createCollection(database(c.env.DB), principal, c.req.valid("json"));
      return c.json({ collection }, 201);
    },
  )
  .get("/", queryParams(pageQuery(100, 20)), async (c) => {
    return c.json(await listCollections(database(c.env.DB), c.get("principal"), c.req.valid("query")));
  })
  .get("/:id", pathParams(collectionParams), async (c) => {
    const collection = await getCollection(database(c.env.DB), c.get("principal"), c.req.valid("param").id);
    return c.json({ collection });
  })
  .put(
    "/:id",
    signedIn,
    communityWrites,
    pathParams(collectionParams),
    jsonBody(
      z
        .object({
          title: userText(100).optional(),
          description: z.string().max(1000).optional(),
          visibility: visibility.optional(),
          curated: z.boolean().optional(),
        })
        .strict()
        .refine((body) => Object.keys(body).length > 0, "change at least one field"),
    ),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const collection = await updateCollection(
        database(c.env.DB),
        principal,
        c.req.valid("param").id,
        c.req.valid("json"),
      );
      return c.json({ collection });
    },
  )
  .delete("/:id", signedIn, pathParams(collectionParams), async (c) => {
    await deleteCollection(database(c.env.DB), requirePrincipal(c.get("principal")), c.req.valid("param").id);
    return c.body(null, 204);
  })
  .post(
    "/:id/items",
    signedIn,
    communityWrites,
    pathParams(collectionParams),
    jsonBody(z.object({ capsule: capsuleNameSchema }).strict()),
    async (c) => {
      const item = await addCollectionItem(
        database(c.env.DB),
        requirePrincipal(c.get("principal")),
        c.req.valid("param").id,
        c.req.valid("json").capsule,
      );
      return c.json({ item }, 201);
    },
  )
  .delete(
    "/:id/items/:ns/:name",
    signedIn,
    pathParams(collectionParams.extend({ ns: segment, name: segment })),
    async (c) => {
      const params = c.req.valid("param");
      await removeCollectionItem(
        database(c.env.DB),
        requirePrincipal(c.get("principal")),
        params.id,
        nameOf(params),
      );
      return c.body(null, 204);
    },
  );

/** The admin-picked featured shelf. */
export const featuredRoutes = new Hono<AppEnv>()
  .put(
    "/",
    withRole("admin"),
    jsonBody(
      z
        .object({
          capsules: z
            .array(capsuleNameSchema)
            .max(MAX_FEATURED)
            .refine((names) => new Set(names).size === names.length, "names a capsule twice"),
        })
        .strict(),
    ),
    async (c) => {
      const principal = requireRole(c.get("principal"), "admin");
      const db = database(c.env.DB);
      const items = await setFeatured(db, principal, c.req.valid("json").capsules);
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ items });
    },
  )
  .get("/", async (c) => c.json({ items: await listFeatured(database(c.env.DB)) }));

/** Capsules by time-decayed installs and executions of the last week (see discovery.ts for the score). */
export const trendingRoutes = new Hono<AppEnv>().get(
  "/",
  queryParams(z.object({ limit: z.coerce.number().int().min(1).max(100).default(20) }).strict()),
  cacheFor(DISCOVERY_CACHE_SECONDS, { shared: true }),
  async (c) => {
    const items = await trending(database(c.env.DB), c.req.valid("query").limit);
    return c.json({ items, windowDays: TRENDING_WINDOW_DAYS, decayDays: TRENDING_DECAY_DAYS });
  },
);
