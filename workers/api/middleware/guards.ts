import { createMiddleware } from "hono/factory";
import { requireAccount, requirePrincipal, requireRole } from "../../shared/auth/principal";
import type { Role } from "../../shared/auth/roles";
import type { AppEnv } from "../context";

// Guards run before body validation so an anonymous or unauthorised caller learns nothing about the input rules.

/** Any authenticated caller. */
export const signedIn = createMiddleware<AppEnv>(async (c, next) => {
  requirePrincipal(c.get("principal"));
  await next();
});

/** An authenticated caller with an account (not the bootstrap admin token). */
export const withAccount = createMiddleware<AppEnv>(async (c, next) => {
  requireAccount(c.get("principal"));
  await next();
});

/** A caller holding one of the roles (admins hold all). */
export const withRole = (...roles: Role[]) =>
  createMiddleware<AppEnv>(async (c, next) => {
    requireRole(c.get("principal"), ...roles);
    await next();
  });
