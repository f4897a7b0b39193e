import { beforeAll, describe, expect, it } from "vitest";
import { app } from "../../workers/api/app";
import { api, grantRoles, signup } from "../helpers";
import { publishReviewer, publishWorker } from "../kamachiq-helpers";

/**
 * Every route of the API (read from the Hono route table, so a new route cannot be forgotten) called by every
 * role, with the status each must get. Guards run before validation, so an empty body tells authorised (400,
 * the body is wrong) from refused (401/403); routes that check ownership get real resources of `owner`, and
 * `user` is another account trying to reach them.
 */

const ROLES = ["anonymous", "user", "owner", "reviewer", "admin"] as const;
type Role = (typeof ROLES)[number];
type Statuses = [anonymous: number, user: number, owner: number, reviewer: number, admin: number];

interface Fixtures {
  owner: string;
  projectId: string;
  submissionId: string;
  keyId: string;
  collectionId: string;
  webhookId: string;
  /** Still running while the routes are called (its one task sleeps), so cancelling it can succeed. */
  runningProjectId: string;
  /** Deleted by the DELETE routes, so the other routes keep theirs. */
  spareCollectionId: string;
  spareWebhookId: string;
}

interface Case {
  statuses: Statuses;
  /** The concrete path; defaults to the pattern with its parameters filled from the fixtures. */
  path?: (f: Fixtures) => string;
  body?: unknown;
  headers?: Record<string, string>;
}

const hex = "0123456789abcdef0123456789abcdef";
const month = new Date().toISOString().slice(0, 7);

const s = (...statuses: Statuses): Case => ({ statuses });

// Status per role, in the order of ROLES: anonymous, user, owner, reviewer, admin. `owner` owns the capsule
// `<owner>/cap`, the project, the submission, the key, the collection and the webhook; `admin` and `reviewer`
// are accounts holding those roles. 400 means the guard let the caller through to body validation.
const EXPECTED: Record<string, Case> = {
  // The scrape endpoint takes its own token (METRICS_TOKEN), never an API bearer.
  "GET /metrics": s(401, 401, 401, 401, 401),
  "GET /healthz": s(200, 200, 200, 200, 200),
  "GET /.well-known/jwks.json": s(200, 200, 200, 200, 200),
  "GET /.well-known/soma/signing-key.pem": s(200, 200, 200, 200, 200),
  "GET /.well-known/soma/keys.json": s(200, 200, 200, 200, 200),
  "GET /v1/schemas/capsule.json": s(200, 200, 200, 200, 200),
  "POST /v1/accounts": s(400, 400, 400, 400, 400),
  "POST /v1/accounts/:handle/api-keys": s(401, 403, 403, 403, 201),
  "POST /v1/accounts/:handle/roles": s(401, 403, 403, 403, 400),
  "PUT /v1/accounts/:handle/verified": s(401, 403, 403, 403, 400),
  "GET /v1/api-keys": s(401, 200, 200, 200, 200),
  "POST /v1/api-keys": s(401, 201, 201, 201, 201),
  "DELETE /v1/api-keys/:id": s(401, 404, 204, 404, 404),
  "POST /v1/auth/token": s(400, 400, 400, 400, 400),
  "POST /v1/capsules": s(401, 415, 415, 415, 415),
  "GET /v1/capsules": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/versions/:version/bundle": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/versions/:version/bundle.sig": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/versions/:version/attestation": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/versions/:version/sbom": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/pricing": s(200, 200, 200, 200, 200),
  "PUT /v1/capsules/:ns/:name/pricing": {
    statuses: [401, 403, 200, 403, 200],
    body: { model: "free", amountUsd: 0 },
  },
  "PUT /v1/capsules/:ns/:name/revenue-share": s(401, 403, 403, 403, 400),
  "POST /v1/capsules/:ns/:name/versions/:version/deprecate": {
    statuses: [401, 403, 200, 403, 200],
    body: { message: "superseded by 2.0" },
  },
  "POST /v1/capsules/:ns/:name/versions/:version/yank": {
    statuses: [401, 403, 409, 403, 200],
    path: (f) => `/v1/capsules/${f.owner}/yankme/versions/1.0.0/yank`,
    body: { reason: "broken build" },
  },
  "PUT /v1/capsules/:ns/:name/rating": s(401, 400, 400, 400, 400),
  "DELETE /v1/capsules/:ns/:name/rating": s(401, 404, 404, 404, 404),
  "GET /v1/capsules/:ns/:name/rating": s(200, 200, 200, 200, 200),
  "GET /v1/capsules/:ns/:name/reviews": s(200, 200, 200, 200, 200),
  "POST /v1/capsules/:ns/:name/reviews/:reviewId/reply": s(401, 400, 400, 400, 400),
  "POST /v1/capsules/:ns/:name/reviews/:reviewId/report": s(401, 400, 400, 400, 400),
  "POST /v1/capsules/:ns/:name/reviews/:reviewId/vote": s(401, 400, 400, 400, 400),
  "GET /v1/capsules/:ns/:name/used-together": s(200, 200, 200, 200, 200),
  "GET /v1/moderation": s(401, 403, 403, 200, 200),
  "POST /v1/moderation/:reviewId": s(401, 403, 403, 400, 400),
  "POST /v1/collections": s(401, 400, 400, 400, 400),
  "GET /v1/collections": s(200, 200, 200, 200, 200),
  // A private collection: strangers cannot tell it from a missing one.
  "GET /v1/collections/:id": s(404, 404, 200, 404, 404),
  "PUT /v1/collections/:id": { statuses: [401, 404, 200, 404, 404], body: { title: "renamed" } },
  "DELETE /v1/collections/:id": {
    statuses: [401, 404, 204, 404, 404],
    path: (f) => `/v1/collections/${f.spareCollectionId}`,
  },
  "POST /v1/collections/:id/items": {
    statuses: [401, 404, 201, 404, 404],
    body: { capsule: "soma/quality-reviewer" },
  },
  "DELETE /v1/collections/:id/items/:ns/:name": {
    statuses: [401, 404, 204, 404, 404],
    path: (f) => `/v1/collections/${f.collectionId}/items/soma/quality-reviewer`,
  },
  "PUT /v1/featured": s(401, 403, 403, 403, 400),
  "GET /v1/featured": s(200, 200, 200, 200, 200),
  "GET /v1/trending": s(200, 200, 200, 200, 200),
  "GET /v1/submissions": s(401, 200, 200, 200, 200),
  "GET /v1/submissions/:id": s(401, 404, 200, 200, 200),
  "GET /v1/review-queue": s(401, 403, 403, 200, 200),
  "POST /v1/submissions/:id/decision": {
    statuses: [401, 403, 403, 409, 409],
    body: { decision: "approve" },
  },
  "POST /v1/installs": s(401, 400, 400, 400, 400),
  "GET /v1/installs": s(401, 200, 200, 200, 200),
  "DELETE /v1/installs/:id": s(401, 404, 404, 404, 404),
  "POST /v1/projects": s(401, 400, 400, 400, 400),
  "GET /v1/projects": s(401, 200, 200, 200, 200),
  // Reviewers see projects (to judge gated tasks); only the owner or an admin may change them.
  "GET /v1/projects/:id": s(401, 404, 200, 200, 200),
  "POST /v1/projects/:id/cancel": {
    statuses: [401, 404, 409, 403, 200],
    path: (f) => `/v1/projects/${f.runningProjectId}/cancel`,
  },
  "GET /v1/projects/:id/report": s(401, 404, 200, 200, 200),
  "GET /v1/projects/:id/ws": { statuses: [401, 404, 101, 101, 101], headers: { upgrade: "websocket" } },
  "GET /v1/projects/:id/events": s(401, 404, 200, 200, 200),
  "GET /v1/projects/:id/artifacts": s(401, 404, 200, 200, 200),
  "GET /v1/projects/:id/artifacts.tar.gz": s(401, 404, 200, 200, 200),
  "GET /v1/projects/:id/artifacts/*": s(401, 404, 404, 404, 404),
  "GET /v1/projects/:id/logs/:attemptId": s(401, 404, 404, 404, 404),
  "POST /v1/projects/:id/tasks/:taskId/review": {
    statuses: [401, 404, 409, 409, 409],
    body: { decision: "approve" },
  },
  "GET /v1/review-tasks": s(401, 200, 200, 200, 200),
  "POST /v1/runners/claim": s(401, 400, 400, 400, 400),
  "POST /v1/runners/jobs/:attemptId/heartbeat": s(401, 400, 400, 400, 400),
  "POST /v1/runners/jobs/:attemptId/release": s(401, 400, 400, 400, 400),
  "POST /v1/runners/jobs/:attemptId/complete": s(401, 400, 400, 400, 400),
  "POST /v1/events": s(401, 400, 400, 400, 400),
  "GET /v1/usage": s(401, 400, 400, 400, 400),
  "GET /v1/forecast": s(401, 200, 200, 200, 200),
  "PUT /v1/budgets/:scope": {
    // The project has finished by now (409); a reviewer is refused before that is looked at.
    statuses: [401, 404, 409, 403, 409],
    path: (f) => `/v1/budgets/project:${f.projectId}`,
    body: { limitTokens: 2_000_000 },
  },
  "GET /v1/budgets/:scope": {
    statuses: [401, 404, 200, 200, 200],
    path: (f) => `/v1/budgets/project:${f.projectId}`,
  },
  "GET /v1/invoices/:period": s(401, 200, 200, 200, 200),
  "GET /v1/payouts": s(401, 200, 200, 200, 200),
  "POST /v1/admin/adjustments": s(401, 403, 403, 403, 400),
  "GET /v1/analytics/platform": s(401, 200, 200, 200, 200),
  "GET /v1/analytics/capsules/:ns/:name": s(401, 404, 200, 404, 200),
  "GET /v1/analytics/me": s(401, 200, 200, 200, 200),
  "GET /v1/analytics/admin": s(401, 403, 403, 403, 200),
  "GET /v1/admin/audit": s(401, 403, 403, 403, 200),
  "GET /v1/admin/dead-letters": s(401, 403, 403, 403, 200),
  "POST /v1/admin/dead-letters/replay": s(401, 403, 403, 403, 200),
  "POST /v1/admin/analytics/retention": s(401, 403, 403, 403, 200),
  "POST /v1/admin/analytics/reimport": s(401, 403, 403, 403, 400),
  "GET /v1/admin/analytics/archive": s(401, 403, 403, 403, 200),
  "POST /v1/webhooks": s(401, 400, 400, 400, 400),
  "GET /v1/webhooks": s(401, 200, 200, 200, 200),
  "GET /v1/webhooks/:id": s(401, 404, 200, 404, 404),
  "PATCH /v1/webhooks/:id": { statuses: [401, 404, 200, 404, 404], body: { description: "renamed" } },
  "DELETE /v1/webhooks/:id": {
    statuses: [401, 404, 204, 404, 404],
    path: (f) => `/v1/webhooks/${f.spareWebhookId}`,
  },
  "POST /v1/webhooks/:id/ping": s(401, 404, 202, 404, 404),
  "GET /v1/webhooks/:id/deliveries": s(401, 404, 200, 404, 404),
  "GET /v1/webhooks/:id/deliveries/:deliveryId": s(401, 404, 404, 404, 404),
  "POST /v1/webhooks/:id/deliveries/:deliveryId/redeliver": s(401, 404, 404, 404, 404),
  "POST /v1/integrations/github": s(401, 400, 400, 400, 400),
  "GET /v1/integrations/github": s(401, 200, 200, 200, 200),
  "DELETE /v1/integrations/github/:id": s(401, 404, 404, 404, 404),
  // GitHub's deliveries are authenticated by their HMAC signature, not a bearer.
  "POST /v1/hooks/github": s(401, 401, 401, 401, 401),
};

const PARAMS: Record<string, (f: Fixtures, path: string) => string> = {
  handle: (f) => f.owner,
  ns: (f) => f.owner,
  name: () => "cap",
  version: () => "1.0.0",
  reviewId: () => `rev_${hex}`,
  attemptId: () => `att_${hex}`,
  deliveryId: () => `whd_${hex}`,
  taskId: () => "a",
  scope: () => "account",
  period: () => month,
  id: (f, path) => {
    if (path.startsWith("/v1/api-keys")) return f.keyId;
    if (path.startsWith("/v1/collections")) return f.collectionId;
    if (path.startsWith("/v1/submissions")) return f.submissionId;
    if (path.startsWith("/v1/projects")) return f.projectId;
    if (path.startsWith("/v1/webhooks")) return f.webhookId;
    if (path.startsWith("/v1/installs")) return `ins_${hex}`;
    if (path.startsWith("/v1/integrations/github")) return `ghl_${hex}`;
    throw new Error(`no fixture for :id in ${path}`);
  },
};

function concretePath(pattern: string, f: Fixtures): string {
  return pattern
    .replace(/:(\w+)/g, (_, name: string) => {
      const fill = PARAMS[name];
      if (!fill) throw new Error(`no value for :${name} in ${pattern}`);
      return fill(f, pattern);
    })
    .replace(/\*$/, "readme.md");
}

/** The API's routes as `METHOD /path`, middleware left out. */
function routeTable(): string[] {
  const routes = new Set<string>();
  for (const route of app.routes) {
    if (route.method === "ALL") continue;
    routes.add(`${route.method} ${route.path}`);
  }
  return [...routes];
}

describe("authorization matrix", () => {
  const tokens = {} as Record<Exclude<Role, "anonymous">, string>;
  let fixtures: Fixtures;

  beforeAll(async () => {
    await publishReviewer();
    const owner = await signup();
    const user = await signup();
    const reviewer = await signup();
    const admin = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    await grantRoles(admin.handle, ["admin"]);
    Object.assign(tokens, {
      owner: owner.apiKey,
      user: user.apiKey,
      reviewer: reviewer.apiKey,
      admin: admin.apiKey,
    });

    const echo = "export default { async run(input) { return { echoed: input }; } };\n";
    await publishWorker(owner.apiKey, `${owner.handle}/cap`, echo);
    await publishWorker(owner.apiKey, `${owner.handle}/yankme`, echo);
    const submissions = (await (await api("/v1/submissions", { token: owner.apiKey })).json()) as {
      items: { id: string }[];
    };
    const sleeper =
      "export default { async run(input) { await new Promise((r) => setTimeout(r, input.sleepMs)); return {}; } };\n";
    await publishWorker(owner.apiKey, `${owner.handle}/sleeper`, sleeper);
    const startProject = async (capsule: string, inputs: Record<string, unknown>) => {
      const res = await api("/v1/projects", {
        method: "POST",
        token: owner.apiKey,
        json: {
          name: "matrix",
          spec: { tasks: [{ id: "a", capsule, inputs }] },
          budget: { tokens: 1_000_000 },
        },
      });
      expect(res.status, await res.clone().text()).toBe(201);
      return ((await res.json()) as { project: { id: string } }).project.id;
    };
    const key = await api("/v1/api-keys", { method: "POST", token: owner.apiKey });
    const makeWebhook = () =>
      api("/v1/webhooks", {
        method: "POST",
        token: owner.apiKey,
        json: { url: "http://127.0.0.1:9/hooks/soma", events: ["capsule.published"] },
      }).then(async (r) => ((await r.json()) as { webhook: { id: string } }).webhook.id);
    const makeCollection = () =>
      api("/v1/collections", {
        method: "POST",
        token: owner.apiKey,
        json: { title: "mine", visibility: "private" },
      }).then(async (r) => ((await r.json()) as { collection: { id: string } }).collection.id);
    fixtures = {
      owner: owner.handle,
      projectId: await startProject(`${owner.handle}/cap`, {}),
      runningProjectId: await startProject(`${owner.handle}/sleeper`, { sleepMs: 15_000 }),
      submissionId: submissions.items[0]!.id,
      keyId: ((await key.json()) as { key: { id: string } }).key.id,
      collectionId: await makeCollection(),
      webhookId: await makeWebhook(),
      spareCollectionId: await makeCollection(),
      spareWebhookId: await makeWebhook(),
    };
  });

  it("has an expectation for every route and a route for every expectation", () => {
    const routes = routeTable();
    expect(
      routes.filter((r) => !(r in EXPECTED)),
      "routes without an entry in EXPECTED",
    ).toEqual([]);
    expect(
      Object.keys(EXPECTED).filter((r) => !routes.includes(r)),
      "entries for no route",
    ).toEqual([]);
  });

  it("holds scoped keys to their scopes on every route", async () => {
    const scoped = async (scopes: string[]) => {
      const res = await api("/v1/api-keys", { method: "POST", token: tokens.owner, json: { scopes } });
      return ((await res.json()) as { apiKey: string }).apiKey;
    };
    const reader = await scoped(["read"]);
    const ingest = await scoped(["events"]);
    const wrong: Record<string, string[]> = { read: [], events: [] };
    for (const route of routeTable()) {
      const [method, pattern] = route.split(" ") as [string, string];
      if (pattern === "/metrics") continue;
      const path = concretePath(pattern, fixtures);
      for (const [scope, token] of [
        ["read", reader],
        ["events", ingest],
      ] as const) {
        const allowed = scope === "read" ? method === "GET" : route === "POST /v1/events";
        const res = await api(path, { method, token, ...(method === "GET" ? {} : { json: {} }) });
        // A scope refusal names the key's scopes; a 403 for a missing role does not.
        const refused =
          res.status === 403 &&
          ((await res.json()) as { error: { details?: { scopes?: unknown } } }).error.details?.scopes !==
            undefined;
        await res.body?.cancel().catch(() => {});
        if (refused === allowed) wrong[scope]!.push(`${route}: ${res.status}`);
      }
    }
    expect(wrong, "routes where a scoped key was let through or wrongly refused").toEqual({
      read: [],
      events: [],
    });
  });

  it("answers every route and role with the expected status", async () => {
    const actual: Record<string, Statuses> = {};
    // Owner last: its calls may change the resources (a yank, a delete) the other roles are tried on.
    const order: Role[] = ["anonymous", "user", "reviewer", "admin", "owner"];
    for (const route of routeTable()) {
      const [method, pattern] = route.split(" ") as [string, string];
      const entry = EXPECTED[route];
      const path = entry?.path ? entry.path(fixtures) : concretePath(pattern, fixtures);
      const statuses = [0, 0, 0, 0, 0] as Statuses;
      for (const role of order) {
        const withBody = method !== "GET" && method !== "DELETE";
        const res = await api(path, {
          method,
          ...(role === "anonymous" ? {} : { token: tokens[role] }),
          ...(withBody ? { json: entry?.body ?? {} } : {}),
          headers: { "cf-connecting-ip": `192.0.2.${ROLES.indexOf(role) + 10}`, ...entry?.headers },
        });
        res.webSocket?.accept();
        res.webSocket?.close();
        await res.body?.cancel();
        statuses[ROLES.indexOf(role)] = res.status;
      }
      actual[route] = statuses;
    }
    const expected = Object.fromEntries(Object.entries(EXPECTED).map(([k, v]) => [k, v.statuses]));
    const table = Object.entries(actual)
      .map(([route, s]) => `  "${route}": [${s.join(", ")}],`)
      .join("\n");
    expect(actual, `actual statuses:\n${table}`).toEqual(expected);
  }, 120_000);
});
