import { AppError } from "../errors";
import { egressAllowed } from "./capabilities";

/** A capsule's outgoing request, as `ctx.fetch` passes it to the host. */
export interface EgressInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface EgressResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Redirects followed for one request, as browsers and fetch cap them (fetch's own limit is 20). */
export const MAX_EGRESS_REDIRECTS = 5;

function parseUrl(url: string, base?: URL): URL {
  try {
    return new URL(url, base);
  } catch {
    throw new AppError("VALIDATION_FAILED", `"${url}" is not a URL`);
  }
}

/**
 * Fetches for a capsule, only from hosts it declared (`network.egress:<host>`). Redirects are handled here, never
 * by fetch: each hop is followed only when its target is a declared host too, so a declared host cannot hand the
 * capsule on to an undeclared one. A redirect to an undeclared host (or past the hop limit) is returned to the
 * capsule as it came, with its Location, and nothing is fetched from there.
 */
export async function declaredEgress(
  capsule: string,
  permissions: string[],
  url: string,
  init?: EgressInit,
): Promise<EgressResponse> {
  let target = parseUrl(url);
  if (!egressAllowed(permissions, target.hostname)) {
    throw new AppError(
      "FORBIDDEN",
      `PERMISSION_DENIED: ${capsule} did not declare network.egress:${target.hostname}`,
    );
  }
  let method = init?.method ?? "GET";
  let body = init?.body;
  for (let hop = 0; ; hop += 1) {
    const response = await fetch(target, { method, headers: init?.headers, body, redirect: "manual" });
    const location = response.headers.get("location");
    const next =
      response.status >= 300 && response.status < 400 && location ? parseUrl(location, target) : null;
    if (
      !next ||
      hop >= MAX_EGRESS_REDIRECTS ||
      !["http:", "https:"].includes(next.protocol) ||
      !egressAllowed(permissions, next.hostname)
    ) {
      return {
        status: response.status,
        headers: Object.fromEntries(response.headers),
        body: await response.text(),
      };
    }
    await response.body?.cancel();
    // As fetch does: 303, and 301/302 after a POST, continue as a GET without the body; 307/308 keep both.
    if (
      response.status === 303 ||
      ((response.status === 301 || response.status === 302) && method === "POST")
    ) {
      method = "GET";
      body = undefined;
    }
    target = next;
  }
}
