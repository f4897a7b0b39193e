import { Hono } from "hono";
import { z } from "zod";
import { requireAccount, requirePrincipal } from "../../shared/auth/principal";
import { roleSchema } from "../../shared/auth/roles";
import { scopesSchema } from "../../shared/auth/scopes";
import {
  createAccount,
  createApiKey,
  findAccountByHandle,
  listApiKeys,
  revokeApiKey,
  setPublisherVerified,
  setRoles,
} from "../../shared/db/accounts";
import { database } from "../../shared/db/client";
import { HANDLE_PATTERN } from "../../shared/domain/manifest";
import { AppError } from "../../shared/errors";
import { flushOutboxSoon } from "../../shared/events/outbox";
import { recordRolesChanged, recordVerificationChanged } from "../../shared/events/security-events";
import type { AppEnv } from "../context";
import { withAccount, withRole } from "../middleware/guards";
import { rateLimit } from "../middleware/rate-limit";
import { jsonBody, optionalJsonBody, pathParams } from "../validate";

const handleSchema = z.string().regex(HANDLE_PATTERN, "2-39 lowercase letters, digits or inner hyphens");

const keyParams = z.object({ id: z.string().regex(/^key_[a-f0-9]{32}$/, "not an API key id") });

/** The caller's own API keys: list (prefixes only), create (shown once, optionally scoped), revoke. */
export const apiKeyRoutes = new Hono<AppEnv>()
  .get("/", withAccount, async (c) => {
    const principal = requireAccount(c.get("principal"));
    return c.json({ items: await listApiKeys(database(c.env.DB), principal.accountId) });
  })
  .post(
    "/",
    withAccount,
    optionalJsonBody(z.object({ scopes: scopesSchema.optional() }).strict()),
    async (c) => {
      const principal = requireAccount(c.get("principal"));
      return c.json(
        await createApiKey(database(c.env.DB), principal, principal.accountId, c.req.valid("json").scopes),
        201,
      );
    },
  )
  .delete("/:id", withAccount, pathParams(keyParams), async (c) => {
    const principal = requireAccount(c.get("principal"));
    await revokeApiKey(database(c.env.DB), principal, principal.accountId, c.req.valid("param").id);
    return c.body(null, 204);
  });

export const accountRoutes = new Hono<AppEnv>()
  .post(
    "/",
    rateLimit("SIGNUP_LIMITER"),
    jsonBody(z.object({ handle: handleSchema, email: z.email().max(254) }).strict()),
    async (c) => {
      const created = await createAccount(database(c.env.DB), c.req.valid("json"));
      return c.json(created, 201);
    },
  )
  .post("/:handle/api-keys", withRole("admin"), pathParams(z.object({ handle: handleSchema })), async (c) => {
    // Recovery: an admin issues a fresh key for an account that lost its own (the old ones stay valid).
    const db = database(c.env.DB);
    const account = await findAccountByHandle(db, c.req.valid("param").handle);
    if (!account) throw new AppError("NOT_FOUND", `No account ${c.req.valid("param").handle}`);
    return c.json(await createApiKey(db, requirePrincipal(c.get("principal")), account.id), 201);
  })
  .post(
    "/:handle/roles",
    withRole("admin"),
    pathParams(z.object({ handle: handleSchema })),
    jsonBody(z.object({ roles: z.array(roleSchema).max(3) }).strict()),
    async (c) => {
      const db = database(c.env.DB);
      const actor = requirePrincipal(c.get("principal"));
      const account = await setRoles(db, actor, c.req.valid("param").handle, c.req.valid("json").roles);
      await recordRolesChanged(db, account, actor);
      flushOutboxSoon(db, c.env, c.executionCtx);
      return c.json({ account });
    },
  )
  .put(
    "/:handle/verified",
    withRole("admin"),
    pathParams(z.object({ handle: handleSchema })),
    jsonBody(z.object({ verified: z.boolean() }).strict()),
    async (c) => {
      const db = database(c.env.DB);
      const actor = requirePrincipal(c.get("principal"));
      const { account, changed } = await setPublisherVerified(
        db,
        actor,
        c.req.valid("param").handle,
        c.req.valid("json").verified,
      );
      if (changed) {
        await recordVerificationChanged(db, account, actor);
        flushOutboxSoon(db, c.env, c.executionCtx);
      }
      return c.json({ account });
    },
  );
