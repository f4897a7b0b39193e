import { env } from "cloudflare:workers";
import { createLocalJWKSet, jwtVerify, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { loadSigningKey } from "../../workers/shared/signing/keys";
import { api, errorOf, signup } from "../helpers";

async function exchange(apiKey: string): Promise<Response> {
  return api("/v1/auth/token", { method: "POST", json: { apiKey } });
}

describe("POST /v1/auth/token", () => {
  it("exchanges an API key for a short-lived ES256 token that the JWKS verifies", async () => {
    const { apiKey, handle, id } = await signup();
    const res = await exchange(apiKey);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { accessToken: string; tokenType: string; expiresIn: number };
    expect(body.tokenType).toBe("Bearer");
    expect(body.expiresIn).toBeLessThanOrEqual(900);
    const jwks = (await (await api("/.well-known/jwks.json")).json()) as { keys: JsonWebKey[] };
    const { payload, protectedHeader } = await jwtVerify(body.accessToken, createLocalJWKSet(jwks as never), {
      audience: "soma-api",
      issuer: env.PUBLIC_URL,
    });
    expect(protectedHeader.alg).toBe("ES256");
    expect(payload.sub).toBe(id);
    expect(payload.handle).toBe(handle);
  });

  it("accepts the access token as a bearer like the API key", async () => {
    const { apiKey } = await signup();
    const { accessToken } = (await (await exchange(apiKey)).json()) as { accessToken: string };
    const res = await api("/v1/installs", { token: accessToken });
    expect(res.status).toBe(200);
  });

  it("refuses an unknown API key with 401 and a missing one with 400", async () => {
    expect((await exchange("soma_not-a-real-key")).status).toBe(401);
    const res = await api("/v1/auth/token", { method: "POST", json: {} });
    expect(res.status).toBe(400);
  });
});

describe("bearer tokens", () => {
  async function forged(alg: "none" | "HS256" | "ES256", claims: Record<string, unknown>): Promise<string> {
    if (alg === "none") {
      const b64 = (o: unknown) =>
        btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
      return `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
    }
    if (alg === "HS256") {
      const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
      const secret = new TextEncoder().encode(key.publicPem);
      return new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: key.keyid }).sign(secret);
    }
    const other = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
    return new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: key.keyid }).sign(other.privateKey);
  }

  const adminClaims = () => ({
    sub: "acc_x",
    handle: "mallory",
    roles: ["admin"],
    iss: env.PUBLIC_URL,
    aud: "soma-api",
    exp: Math.floor(Date.now() / 1000) + 600,
  });

  it.each(["none", "HS256", "ES256"] as const)("rejects a forged %s token with 401", async (alg) => {
    const token = await forged(alg, adminClaims());
    const res = await api("/v1/review-queue", { token });
    expect(res.status).toBe(401);
    expect((await errorOf(res)).code).toBe("UNAUTHENTICATED");
  });

  it("rejects an expired token and a token for another audience", async () => {
    const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: key.keyid }).sign(key.privateKey);
    const expired = await sign({ ...adminClaims(), exp: Math.floor(Date.now() / 1000) - 60 });
    const otherAudience = await sign({ ...adminClaims(), aud: "someone-else" });
    expect((await api("/v1/review-queue", { token: expired })).status).toBe(401);
    expect((await api("/v1/review-queue", { token: otherAudience })).status).toBe(401);
  });

  it("rejects a malformed Authorization header", async () => {
    const res = await api("/v1/installs", { headers: { authorization: "Basic abc" } });
    expect(res.status).toBe(401);
  });

  it("treats the configured admin token as the bootstrap admin", async () => {
    const res = await api("/v1/review-queue", { token: env.SOMA_ADMIN_TOKEN });
    expect(res.status).toBe(200);
  });
});
