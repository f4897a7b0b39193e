import { z } from "zod";

/**
 * What an API key (and the access tokens exchanged for it) may do. A key holds one or more scopes and may do
 * what any of them allows:
 * - `full`: everything its account may do (sign-up's key, admin recovery keys, keys made without scopes);
 * - `read`: GET and HEAD requests only;
 * - `runner`: what `soma runner` needs: the runner API (`/v1/runners/*`) and reads (bundles, artefacts);
 * - `events`: event ingestion (`POST /v1/events`) and nothing else.
 */
export const API_KEY_SCOPES = ["full", "read", "runner", "events"] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

export const scopeSchema = z.enum(API_KEY_SCOPES);
export const scopesSchema = z.array(scopeSchema).min(1).max(API_KEY_SCOPES.length);

export const FULL_ACCESS: readonly ApiKeyScope[] = ["full"];

const isRead = (method: string) => method === "GET" || method === "HEAD";

const ALLOWS: Record<ApiKeyScope, (method: string, path: string) => boolean> = {
  full: () => true,
  read: (method) => isRead(method),
  runner: (method, path) => isRead(method) || path.startsWith("/v1/runners/"),
  events: (method, path) => method === "POST" && path.replace(/\/+$/, "") === "/v1/events",
};

/** True when a request (method and URL path) is within at least one of the scopes. */
export function scopesAllow(scopes: readonly ApiKeyScope[], method: string, path: string): boolean {
  const m = method.toUpperCase();
  return scopes.some((scope) => ALLOWS[scope](m, path));
}

/** A key's stored scopes as a list: NULL is full access (keys made before scopes existed). */
export function scopesFromStored(stored: readonly string[] | null | undefined): ApiKeyScope[] {
  if (!stored) return [...FULL_ACCESS];
  const parsed = scopesSchema.safeParse(stored);
  // An unreadable stored value must never widen access: treat it as the narrowest scope.
  return parsed.success ? parsed.data : ["read"];
}

/** Scopes as the space-separated `scope` claim of an access token (RFC 9068) and back. */
export function scopeClaim(scopes: readonly ApiKeyScope[]): string {
  return [...new Set(scopes)].join(" ");
}

export function scopesFromClaim(claim: string | undefined): ApiKeyScope[] | null {
  if (claim === undefined) return null;
  const parsed = scopesSchema.safeParse(claim.split(" ").filter(Boolean));
  return parsed.success ? parsed.data : null;
}
