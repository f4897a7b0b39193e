import { env } from "cloudflare:workers";
import { createLocalJWKSet, jwtVerify, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { loadSigningKey, type SigningKey } from "../../workers/shared/signing/keys";
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
    iat: Math.floor(Date.now() / 1000),
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

describe("auth key rotation by kid", () => {
  const now = () => Math.floor(Date.now() / 1000);

  async function freshKey(): Promise<SigningKey> {
    const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    const pkcs8 = new Uint8Array((await crypto.subtle.exportKey("pkcs8", pair.privateKey)) as ArrayBuffer);
    const body = btoa(String.fromCharCode(...pkcs8));
    return loadSigningKey(`-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`);
  }

  async function register(key: SigningKey, purpose: "auth" | "capsules", retiredAt: number | null) {
    await env.DB.prepare(
      "INSERT INTO signing_keys (keyid, purpose, public_pem, public_jwk, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
      .bind(
        key.keyid,
        purpose,
        key.publicPem,
        JSON.stringify(key.publicJwk),
        new Date((now() - 86_400) * 1000).toISOString(),
        retiredAt === null ? null : new Date(retiredAt * 1000).toISOString(),
      )
      .run();
  }

  async function tokenFor(key: SigningKey, iat: number, exp: number, sub: string, handle: string) {
    return new SignJWT({ handle, roles: ["user"], scope: "full" })
      .setProtectedHeader({ alg: "ES256", kid: key.keyid, typ: "JWT" })
      .setSubject(sub)
      .setIssuer(env.PUBLIC_URL)
      .setAudience("soma-api")
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(key.privateKey);
  }

  it("still accepts a token signed by a retired key that the JWKS publishes, until the token expires", async () => {
    const user = await signup();
    const retired = await freshKey();
    await register(retired, "auth", now() - 300);
    const jwks = (await (await api("/.well-known/jwks.json")).json()) as { keys: { kid?: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toContain(retired.keyid);

    const beforeRetirement = await tokenFor(retired, now() - 360, now() + 300, user.id, user.handle);
    expect((await api("/v1/installs", { token: beforeRetirement })).status).toBe(200);
    const expired = await tokenFor(retired, now() - 900, now() - 120, user.id, user.handle);
    expect((await api("/v1/installs", { token: expired })).status).toBe(401);
  });

  it("refuses a token a retired key signed after its retirement, so a leaked old key mints nothing", async () => {
    const user = await signup();
    const retired = await freshKey();
    await register(retired, "auth", now() - 600);
    const minted = await tokenFor(retired, now(), now() + 300, user.id, user.handle);
    const res = await api("/v1/installs", { token: minted });
    expect(res.status).toBe(401);
    expect((await errorOf(res)).code).toBe("UNAUTHENTICATED");
  });

  it("refuses an unknown kid, a kid of a capsule-signing key, and a lifetime longer than the configured one", async () => {
    const user = await signup();
    const unknown = await freshKey();
    expect(
      (
        await api("/v1/installs", {
          token: await tokenFor(unknown, now(), now() + 300, user.id, user.handle),
        })
      ).status,
    ).toBe(401);
    const capsuleKey = await freshKey();
    await register(capsuleKey, "capsules", null);
    expect(
      (
        await api("/v1/installs", {
          token: await tokenFor(capsuleKey, now(), now() + 300, user.id, user.handle),
        })
      ).status,
    ).toBe(401);
    const current = await loadSigningKey(env.AUTH_SIGNING_KEY);
    const longLived = await tokenFor(current, now() - 7200, now() + 3600, user.id, user.handle);
    expect((await api("/v1/installs", { token: longLived })).status).toBe(401);
    const fresh = await tokenFor(current, now(), now() + 300, user.id, user.handle);
    expect((await api("/v1/installs", { token: fresh })).status).toBe(200);
  });

  it("refuses a token from another issuer and one without an issue time", async () => {
    const user = await signup();
    const key = await loadSigningKey(env.AUTH_SIGNING_KEY);
    const otherIssuer = await new SignJWT({ handle: user.handle, roles: ["user"] })
      .setProtectedHeader({ alg: "ES256", kid: key.keyid })
      .setSubject(user.id)
      .setIssuer("https://evil.example")
      .setAudience("soma-api")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(key.privateKey);
    const noIat = await new SignJWT({ handle: user.handle, roles: ["user"] })
      .setProtectedHeader({ alg: "ES256", kid: key.keyid })
      .setSubject(user.id)
      .setIssuer(env.PUBLIC_URL)
      .setAudience("soma-api")
      .setExpirationTime("5m")
      .sign(key.privateKey);
    expect((await api("/v1/installs", { token: otherIssuer })).status).toBe(401);
    expect((await api("/v1/installs", { token: noIat })).status).toBe(401);
  });
});
