import { Hono } from "hono";
import { z } from "zod";
import { requireAccount } from "../../shared/auth/principal";
import { database } from "../../shared/db/client";
import { flushOutboxSoon } from "../../shared/events/outbox";
import {
  DELIVERY_STATUSES,
  getDelivery,
  listDeliveries,
  pingWebhook,
  redeliver,
} from "../../shared/webhooks/deliveries";
import { WEBHOOK_EVENT_TYPES } from "../../shared/webhooks/event-types";
import {
  authenticateGithubHook,
  handleGithubEvent,
  linkGithubRepository,
  listGithubLinks,
  repositorySchema,
  unlinkGithubRepository,
} from "../../shared/webhooks/github";
import { MAX_URL_LENGTH } from "../../shared/webhooks/url-policy";
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  listWebhooks,
  updateWebhook,
} from "../../shared/webhooks/webhooks";
import type { AppEnv } from "../context";
import { withAccount } from "../middleware/guards";
import { readBodyBounded } from "../request-body";
import { jsonBody, pathParams, queryParams } from "../validate";

/** GitHub payloads are small; release events with long notes stay far below this. */
const MAX_GITHUB_PAYLOAD_BYTES = 2 * 1024 * 1024;

const secretSchema = z
  .string()
  .min(16)
  .max(256)
  .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces");
const eventsSchema = z
  .array(z.enum(WEBHOOK_EVENT_TYPES))
  .min(1)
  .max(WEBHOOK_EVENT_TYPES.length * 2);
const urlSchema = z.string().min(1).max(MAX_URL_LENGTH);
const descriptionSchema = z.string().max(200);

const webhookParams = z.object({ id: z.string().regex(/^wh_[a-f0-9]{32}$/, "not a webhook id") });
const deliveryParams = webhookParams.extend({
  deliveryId: z.string().regex(/^whd_[a-f0-9]{32}$/, "not a delivery id"),
});

/** Outgoing webhooks of the caller's account: registration, the delivery log, redelivery and pings. */
export const webhookRoutes = new Hono<AppEnv>()
  .post(
    "/",
    withAccount,
    jsonBody(
      z
        .object({
          url: urlSchema,
          events: eventsSchema,
          secret: secretSchema.optional(),
          description: descriptionSchema.optional(),
        })
        .strict(),
    ),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const created = await createWebhook(
        c.env,
        database(c.env.DB),
        principal.accountId,
        c.req.valid("json"),
      );
      return c.json(created, 201);
    },
  )
  .get("/", withAccount, async (c) => {
    const principal = requireAccount(c.get("principal"));
    return c.json({ webhooks: await listWebhooks(database(c.env.DB), principal.accountId) });
  })
  .get("/:id", withAccount, pathParams(webhookParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const webhook = await getWebhook(database(c.env.DB), principal.accountId, c.req.valid("param").id);
    return c.json({ webhook });
  })
  .patch(
    "/:id",
    withAccount,
    pathParams(webhookParams),
    jsonBody(
      z
        .object({
          url: urlSchema.optional(),
          events: eventsSchema.optional(),
          description: descriptionSchema.optional(),
        })
        .strict()
        .refine((b) => Object.keys(b).length > 0, {
          message: "change at least one of url, events, description",
        }),
    ),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const webhook = await updateWebhook(
        c.env,
        database(c.env.DB),
        principal.accountId,
        c.req.valid("param").id,
        c.req.valid("json"),
      );
      return c.json({ webhook });
    },
  )
  .delete("/:id", withAccount, pathParams(webhookParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    await deleteWebhook(database(c.env.DB), principal.accountId, c.req.valid("param").id);
    return c.body(null, 204);
  })
  .post("/:id/ping", withAccount, pathParams(webhookParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const delivery = await pingWebhook(
      c.env,
      database(c.env.DB),
      principal.accountId,
      c.req.valid("param").id,
    );
    return c.json({ delivery }, 202);
  })
  .get(
    "/:id/deliveries",
    withAccount,
    pathParams(webhookParams),
    queryParams(
      z
        .object({
          limit: z.coerce.number().int().min(1).max(100).default(20),
          cursor: z.string().max(300).optional(),
          status: z.enum(DELIVERY_STATUSES).optional(),
        })
        .strict(),
    ),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const page = await listDeliveries(
        database(c.env.DB),
        principal.accountId,
        c.req.valid("param").id,
        c.req.valid("query"),
      );
      return c.json(page);
    },
  )
  .get("/:id/deliveries/:deliveryId", withAccount, pathParams(deliveryParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const { id, deliveryId } = c.req.valid("param");
    return c.json(await getDelivery(database(c.env.DB), principal.accountId, id, deliveryId));
  })
  .post("/:id/deliveries/:deliveryId/redeliver", withAccount, pathParams(deliveryParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    const { id, deliveryId } = c.req.valid("param");
    const delivery = await redeliver(c.env, database(c.env.DB), principal.accountId, id, deliveryId);
    return c.json({ delivery }, 202);
  });

/** Links between GitHub repositories and the caller's account, for `POST /v1/hooks/github`. */
export const githubIntegrationRoutes = new Hono<AppEnv>()
  .post(
    "/",
    withAccount,
    jsonBody(z.object({ repository: repositorySchema, secret: secretSchema.optional() }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      const linked = await linkGithubRepository(
        database(c.env.DB),
        principal,
        principal.accountId,
        c.req.valid("json"),
      );
      return c.json(linked, 201);
    },
  )
  .get("/", withAccount, async (c) => {
    const principal = requireAccount(c.get("principal"));
    return c.json({ links: await listGithubLinks(database(c.env.DB), principal.accountId) });
  })
  .delete(
    "/:id",
    withAccount,
    pathParams(z.object({ id: z.string().regex(/^ghl_[a-f0-9]{32}$/, "not a GitHub link id") })),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      await unlinkGithubRepository(
        database(c.env.DB),
        principal,
        principal.accountId,
        c.req.valid("param").id,
      );
      return c.body(null, 204);
    },
  );

/**
 * GitHub's webhook endpoint. Authenticated by `X-Hub-Signature-256`, not a bearer token: nothing is read or
 * stored before the signature verifies with the named repository's link secret.
 */
export const githubHookRoutes = new Hono<AppEnv>().post("/", async (c) => {
  const raw = await readBodyBounded(c.req.raw, MAX_GITHUB_PAYLOAD_BYTES);
  const db = database(c.env.DB);
  const { link, payload } = await authenticateGithubHook(db, raw, {
    signature: c.req.header("x-hub-signature-256"),
    contentType: c.req.header("content-type") ?? "",
  });
  const event = c.req.header("x-github-event") ?? "";
  const result = await handleGithubEvent(c.env, db, link, event, payload);
  if (result.ignored) return c.json(result, 202);
  flushOutboxSoon(db, c.env, c.executionCtx);
  return c.json(result, 201);
});
