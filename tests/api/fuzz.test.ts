import { env } from "cloudflare:workers";
import fc from "fast-check";
import { gzipSync } from "fflate";
import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { app } from "../../workers/api/app";
import { api, BASE, grantRoles, manifest, publish, signup, tarGz, upload } from "../helpers";
import { publishReviewer } from "../kamachiq-helpers";

/**
 * Hostile input against every JSON endpoint: malformed and truncated JSON, wrong types, huge and deeply nested
 * bodies, invalid UTF-8, SQL and ClickHouse injection strings and path tricks. The platform must never answer
 * 5xx, and a refused request (4xx) must leave D1 and R2 as they were. Seeded and bounded, so a failure replays.
 */

const SEED = 20261203;
const RUNS_PER_ROUTE = 10;

const INJECTIONS = [
  "' OR '1'='1",
  "'; DROP TABLE accounts; --",
  '" OR 1=1 --',
  "1; SELECT * FROM system.tables",
  "' UNION ALL SELECT name FROM system.users --",
  "x') FORMAT JSONEachRow --",
  "\\'; SELECT 1 --",
  "$(id)",
  "`rm -rf /`",
  "../../../../etc/passwd",
  "..%2f..%2fetc%2fpasswd",
  "%00",
  "\u0000",
  "\ud800",
  "<script>alert(1)</script>",
  "{{constructor.constructor('return 1')()}}",
  "__proto__",
  "x".repeat(10_000),
];

// Field names the API's schemas use, so generated objects reach deeper than the first unknown key.
const FIELDS = [
  "handle",
  "email",
  "roles",
  "scopes",
  "apiKey",
  "capsule",
  "range",
  "acceptPermissions",
  "acceptPrices",
  "name",
  "spec",
  "tasks",
  "budget",
  "tokens",
  "decision",
  "notes",
  "feedback",
  "message",
  "reason",
  "model",
  "amountUsd",
  "stars",
  "text",
  "helpful",
  "title",
  "description",
  "visibility",
  "curated",
  "capsules",
  "url",
  "events",
  "secret",
  "repository",
  "runnerId",
  "waitSeconds",
  "status",
  "output",
  "error",
  "logs",
  "artifacts",
  "limitTokens",
  "limitUsd",
  "softPct",
  "hardPct",
  "rollover",
  "account",
  "period",
  "kind",
  "percent",
  "queue",
  "limit",
  "day",
  "days",
  "retentionDays",
  "maxDays",
  "__proto__",
  "constructor",
];

const hostileString = fc.oneof(
  fc.constantFrom(...INJECTIONS),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 20 }),
);
const hostileValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    hostileString,
    fc.integer(),
    fc.double(),
    fc.constantFrom(null, true, false, -1, 0, 1e308, Number.MAX_SAFE_INTEGER + 2, "", [], {}),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom(...FIELDS), tie("value"), { maxKeys: 4 }),
  ),
})).value;

const encoder = new TextEncoder();

/** A request body: bytes plus the content type it claims. */
interface Body {
  bytes: Uint8Array;
  contentType: string;
}

const json = (value: unknown): Body => ({
  bytes: encoder.encode(JSON.stringify(value) ?? "null"),
  contentType: "application/json",
});

const bodies: fc.Arbitrary<Body> = fc.oneof(
  // Objects with the API's own field names and hostile values.
  fc.dictionary(fc.constantFrom(...FIELDS), hostileValue, { maxKeys: 6 }).map(json),
  // Any JSON value where an object belongs.
  hostileValue.map(json),
  // Malformed JSON: truncated, trailing garbage, comments, single quotes, NaN.
  fc
    .tuple(
      fc.dictionary(fc.constantFrom(...FIELDS), hostileValue, { maxKeys: 4 }),
      fc.nat(),
      fc.constantFrom("", "}", ",", "/*", "NaN", "'x'", "\u0000"),
    )
    .map(([v, cut, tail]) => {
      const text = JSON.stringify(v);
      return {
        bytes: encoder.encode(text.slice(0, cut % (text.length + 1)) + tail),
        contentType: "application/json",
      };
    }),
  // Invalid UTF-8 inside a JSON string.
  fc.uint8Array({ minLength: 1, maxLength: 32 }).map((raw) => {
    const bytes = new Uint8Array([
      ...encoder.encode('{"handle":"'),
      0xff,
      0xfe,
      0xc3,
      ...raw,
      ...encoder.encode('"}'),
    ]);
    return { bytes, contentType: "application/json" };
  }),
  // Deeply nested arrays and objects.
  fc.integer({ min: 1_000, max: 20_000 }).map((depth) => ({
    bytes: encoder.encode(`${"[".repeat(depth)}${"]".repeat(depth)}`),
    contentType: "application/json",
  })),
  fc.integer({ min: 1_000, max: 5_000 }).map((depth) => ({
    bytes: encoder.encode(`${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`),
    contentType: "application/json",
  })),
  // A wrong or lying content type.
  fc
    .constantFrom(
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/json; charset=utf-7",
    )
    .map((contentType) => ({
      bytes: encoder.encode('{"handle":"x"}'),
      contentType,
    })),
);

/** A body just over every JSON limit, sent once to each route rather than mixed in at random. */
const HUGE: Body = {
  bytes: encoder.encode(JSON.stringify({ text: "x".repeat(5 * 1024 * 1024) })),
  contentType: "application/json",
};

/**
 * A valid body per route (where one exists), so mutations reach each field's own validation and the code behind
 * it rather than stopping at the first unknown key. `ns`/`name` in paths become the fuzzing account's capsule.
 */
function templates(owner: string): Record<string, unknown> {
  const capsule = `${owner}/cap`;
  const event = {
    specversion: "1.0",
    id: "e1",
    source: "soma://fuzz",
    type: "soma.usage.tokens",
    time: new Date().toISOString(),
    data: { inputTokens: 1, outputTokens: 1 },
  };
  return {
    "POST /v1/accounts": { handle: "fuzzer", email: "fuzzer@example.com" },
    "POST /v1/accounts/:handle/roles": { roles: ["reviewer"] },
    "POST /v1/api-keys": { scopes: ["read"] },
    "POST /v1/auth/token": { apiKey: "soma_x" },
    "PUT /v1/capsules/:ns/:name/revenue-share": { authorSharePct: 70 },
    "PUT /v1/capsules/:ns/:name/pricing": { model: "per_execution", amountUsd: 0.01 },
    "POST /v1/capsules/:ns/:name/versions/:version/deprecate": { message: "old" },
    "POST /v1/capsules/:ns/:name/versions/:version/yank": { reason: "bad" },
    "PUT /v1/capsules/:ns/:name/rating": { stars: 4, text: "fine" },
    "POST /v1/capsules/:ns/:name/reviews/:reviewId/reply": { text: "thanks" },
    "POST /v1/capsules/:ns/:name/reviews/:reviewId/report": { reason: "spam" },
    "POST /v1/capsules/:ns/:name/reviews/:reviewId/vote": { helpful: true },
    "POST /v1/moderation/:reviewId": { decision: "restore" },
    "POST /v1/collections": { title: "list", visibility: "private" },
    "PUT /v1/collections/:id": { title: "list" },
    "POST /v1/collections/:id/items": { capsule },
    "PUT /v1/featured": { capsules: [capsule] },
    "POST /v1/submissions/:id/decision": { decision: "approve", notes: "ok" },
    "POST /v1/installs": { capsule, range: "^1.0.0", acceptPermissions: ["artifacts.read"] },
    "POST /v1/projects": {
      name: "fuzz",
      spec: { tasks: [{ id: "a", capsule, inputs: { x: 1 } }] },
      budget: { tokens: 1000 },
    },
    "POST /v1/projects/:id/tasks/:taskId/review": { decision: "approve", feedback: "" },
    "POST /v1/runners/claim": { runnerId: "fuzz", waitSeconds: 0 },
    "POST /v1/runners/jobs/:attemptId/heartbeat": { runnerId: "fuzz" },
    "POST /v1/runners/jobs/:attemptId/release": { runnerId: "fuzz" },
    "POST /v1/runners/jobs/:attemptId/complete": {
      runnerId: "fuzz",
      status: "succeeded",
      output: {},
      logs: "",
    },
    "POST /v1/events": [event],
    "PUT /v1/budgets/:scope": { limitTokens: 1000, softPct: 80 },
    "POST /v1/admin/adjustments": {
      account: owner,
      period: new Date().toISOString().slice(0, 7),
      kind: "credit",
      amountUsd: 1,
      reason: "fuzz",
    },
    "POST /v1/webhooks": { url: "http://127.0.0.1:9/hook", events: ["capsule.published"] },
    "PATCH /v1/webhooks/:id": { description: "x" },
    "POST /v1/integrations/github": { repository: "acme/repo" },
  };
}

// Admin operations on the ClickHouse every test file shares: fuzzed with malformed bodies only, never a valid
// template, so a mutation cannot archive or re-import another file's events.
const SHARED_STATE_ROUTES = new Set([
  "POST /v1/admin/analytics/retention",
  "POST /v1/admin/analytics/reimport",
  "POST /v1/admin/dead-letters/replay",
]);

/** One field of a value replaced by a hostile value, removed, or an unknown field added. */
function mutation(template: unknown): fc.Arbitrary<Body> {
  const paths: (string | number)[][] = [];
  const walk = (value: unknown, path: (string | number)[]) => {
    paths.push(path);
    if (Array.isArray(value)) {
      for (const [i, v] of value.entries()) walk(v, [...path, i]);
    } else if (value && typeof value === "object")
      for (const [k, v] of Object.entries(value)) walk(v, [...path, k]);
  };
  walk(template, []);
  return fc
    .tuple(
      fc.constantFrom(...paths),
      fc.constantFrom("replace", "remove", "add"),
      hostileValue,
      fc.constantFrom(...FIELDS),
    )
    .map(([path, how, value, field]) => {
      const copy = structuredClone(template) as Record<string | number, unknown>;
      if (path.length === 0) return json(how === "replace" ? value : copy);
      let parent: Record<string | number, unknown> = copy;
      for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
      const last = path.at(-1)!;
      if (how === "replace") parent[last] = value;
      else if (how === "remove") delete parent[last];
      else if (typeof parent === "object" && !Array.isArray(parent)) parent[field] = value;
      return json(copy);
    });
}

const pathSegment = fc.oneof(
  fc.constantFrom(
    "..",
    "%2e%2e",
    "..%2f..",
    "%00",
    "%ff",
    "%",
    "a%2Fb",
    "' OR 1=1 --",
    "x".repeat(300),
    "soma",
    "1.0.0",
    "CON",
    "🙂",
  ),
  fc.stringMatching(/^[a-z0-9_.-]{1,20}$/),
);

function fillPath(pattern: string, segments: string[]): string {
  let i = 0;
  return pattern
    .replace(/:(\w+)/g, () => encodeURIComponent(segments[i++ % segments.length] ?? "x").replace(/%25/g, "%"))
    .replace(/\*$/, segments[0] ?? "x");
}

const queryString = fc
  .dictionary(
    fc.constantFrom(
      "q",
      "limit",
      "cursor",
      "from",
      "to",
      "after",
      "sort",
      "format",
      "interval",
      "groupBy",
      "account",
      "scope",
      "category",
      "tag",
      "horizonDays",
    ),
    hostileString,
    { maxKeys: 4 },
  )
  .map((q) => new URLSearchParams(q as Record<string, string>).toString());

/**
 * A 5xx is a bug unless the analytics store itself was unreachable (the local ClickHouse dropping a connection
 * under load): an answer caused by the input, such as a query the store refuses, still fails the test.
 */
function isFailure(status: number, text: string): boolean {
  if (status < 500) return false;
  return !(status === 502 && /Network connection lost|ECONNREFUSED|ECONNRESET|timed? ?out/i.test(text));
}

/** Row counts of every D1 table and the R2 object count: what a refused request must not change. */
async function stateSnapshot(): Promise<string> {
  const { results } = await env.DB.prepare(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'd1_%' ORDER BY name",
  ).all<{ name: string }>();
  const counts = await env.DB.batch(
    results.map((t) => env.DB.prepare(`SELECT '${t.name}' AS t, count(*) AS n FROM "${t.name}"`)),
  );
  let objects = 0;
  let cursor: string | undefined;
  do {
    const page = await env.BUNDLES.list({ cursor, limit: 1000 });
    objects += page.objects.length;
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return JSON.stringify({ d1: counts.map((c) => c.results[0]), r2: objects });
}

function routeTable(): { method: string; path: string }[] {
  const seen = new Map<string, { method: string; path: string }>();
  for (const r of app.routes)
    if (r.method !== "ALL") seen.set(`${r.method} ${r.path}`, { method: r.method, path: r.path });
  return [...seen.values()];
}

describe("fuzz: hostile input never gets a 5xx or changes state", () => {
  let owner: string;
  let ownerToken: string;
  let adminToken: string;
  let projectId: string;
  beforeAll(async () => {
    await publishReviewer();
    const author = await signup();
    const admin = await signup();
    await grantRoles(admin.handle, ["admin"]);
    await publish(author.apiKey, { name: `${author.handle}/cap`, permissions: [] });
    const project = await api("/v1/projects", {
      method: "POST",
      token: author.apiKey,
      json: {
        name: "fuzzed",
        spec: { tasks: [{ id: "a", capsule: `${author.handle}/cap`, inputs: {} }] },
        budget: { tokens: 100_000 },
      },
    });
    expect(project.status, await project.clone().text()).toBe(201);
    projectId = ((await project.json()) as { project: { id: string } }).project.id;
    owner = author.handle;
    ownerToken = author.apiKey;
    adminToken = admin.apiKey;
  });

  /**
   * Real values for the parameters half the time (so requests reach the handlers), hostile ones otherwise; a
   * trailing wildcard always gets a hostile segment, raw, as a client could send it.
   */
  function pathFor(pattern: string, segments: string[], real: boolean): string {
    if (!real) return fillPath(pattern, segments);
    const known: Record<string, string> = {
      handle: owner,
      ns: owner,
      name: "cap",
      version: "1.0.0",
      scope: "account",
      period: new Date().toISOString().slice(0, 7),
      ...(pattern.startsWith("/v1/projects/") ? { id: projectId } : {}),
    };
    let i = 0;
    return pattern
      .replace(
        /:(\w+)/g,
        (_, param: string) => known[param] ?? encodeURIComponent(segments[i++ % segments.length] ?? "x"),
      )
      .replace(/\*$/, segments.at(-1) ?? "a.txt");
  }

  const writes = routeTable().filter((r) => r.method !== "GET");
  const reads = routeTable().filter(
    (r) => r.method === "GET" && !r.path.endsWith("/ws") && !r.path.endsWith("/events"),
  );

  it.each(writes.map((r) => [`${r.method} ${r.path}`, r] as const))("%s", async (key, route) => {
    const failures: string[] = [];
    const check = async (path: string, body: Body, bearer: string) => {
      const before = await stateSnapshot();
      const headers: Record<string, string> = {
        "content-type": body.contentType,
        authorization: `Bearer ${bearer}`,
        // Each request from its own address, so per-address limits do not turn the run into 429s.
        "cf-connecting-ip": `198.18.${Math.floor(Math.random() * 255)}.${Math.floor(Math.random() * 255)}`,
      };
      const res = await api(path, { method: route.method, headers, body: body.bytes });
      const text = await res.text();
      const sent = new TextDecoder().decode(body.bytes.slice(0, 160));
      if (isFailure(res.status, text))
        failures.push(`${res.status} ${path} ${sent} -> ${text.slice(0, 300)}`);
      else if (res.status >= 400 && (await stateSnapshot()) !== before) {
        failures.push(`${res.status} changed state: ${path} ${sent} -> ${text.slice(0, 200)}`);
      }
    };
    const template = SHARED_STATE_ROUTES.has(key) ? undefined : templates(owner)[key];
    const body =
      template === undefined
        ? bodies
        : fc.oneof({ arbitrary: mutation(template), weight: 3 }, { arbitrary: bodies, weight: 1 });
    await fc.assert(
      fc.asyncProperty(
        body,
        fc.array(pathSegment, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.boolean(),
        async (b, segments, real, asAdmin) => {
          await check(pathFor(route.path, segments, real), b, asAdmin ? adminToken : ownerToken);
        },
      ),
      { seed: SEED, numRuns: RUNS_PER_ROUTE },
    );
    await check(pathFor(route.path, ["x"], true), HUGE, ownerToken);
    expect(failures).toEqual([]);
  });

  it("answers every GET route with hostile paths and query strings without a 5xx", async () => {
    const failures: string[] = [];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...reads),
        fc.array(pathSegment, { minLength: 1, maxLength: 4 }),
        queryString,
        fc.boolean(),
        fc.boolean(),
        async (route, segments, query, real, asAdmin) => {
          const path = `${pathFor(route.path, segments, real)}?${query}`;
          const res = await api(path, { token: asAdmin ? adminToken : ownerToken });
          const text = await res.text();
          if (isFailure(res.status, text))
            failures.push(`${res.status} GET ${path} -> ${text.slice(0, 300)}`);
        },
      ),
      { seed: SEED, numRuns: reads.length * 6 },
    );
    expect(failures).toEqual([]);
  });

  it("refuses hostile bundles with a 4xx and stores nothing", async () => {
    // Its own author: the submission limit (30 a minute) is per account.
    const author = await signup();
    const entryName = fc.oneof(
      fc.constantFrom(
        "../escape.js",
        "/etc/passwd",
        "dist/../../x",
        "a\u0000b",
        "C:\\win.ini",
        "x".repeat(300),
        "capsule.yaml",
      ),
      fc.stringMatching(/^[a-z]{1,8}(\/[a-z]{1,8}){0,3}\.(js|yaml|txt)$/),
    );
    const hostileManifest = fc.oneof(
      // The manifest with one field replaced by a hostile value.
      mutation(manifest({ name: `${author.handle}/fuzzed` })).map((b) =>
        stringify(JSON.parse(new TextDecoder().decode(b.bytes))),
      ),
      // YAML tricks: an alias bomb, tags, duplicate keys, a document that is not a mapping.
      fc.constantFrom(
        `a: &a ["x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d]\n`,
        "!!js/function 'function () { return 1 }'\n",
        "apiVersion: soma.dev/v1\napiVersion: soma.dev/v2\n",
        "- just\n- a list\n",
        "\u0000\uffff",
        stringify(manifest({ name: "someone-else/capsule" })),
      ),
    );
    const bundle = fc.oneof(
      fc.uint8Array({ maxLength: 2048 }),
      fc.uint8Array({ maxLength: 2048 }).map((bytes) => gzipSync(bytes)),
      fc
        .tuple(hostileManifest, fc.array(fc.tuple(entryName, fc.string({ maxLength: 64 })), { maxLength: 4 }))
        .map(([yaml, extra]) => ({ yaml, extra })),
    );
    const failures: string[] = [];
    await fc.assert(
      fc.asyncProperty(bundle, async (candidate) => {
        const bytes =
          candidate instanceof Uint8Array
            ? candidate
            : await tarGz([
                { name: "capsule.yaml", body: candidate.yaml },
                { name: "dist/main.js", body: "export default { async run() { return {}; } };\n" },
                ...candidate.extra.map(([name, body]) => ({ name, body })),
              ]).catch(() => new Uint8Array([0x1f, 0x8b]));
        const before = await stateSnapshot();
        const res = await upload(author.apiKey, bytes);
        const text = await res.text();
        if (isFailure(res.status, text)) failures.push(`${res.status} -> ${text.slice(0, 300)}`);
        else if (res.status >= 400 && (await stateSnapshot()) !== before)
          failures.push(`${res.status} changed state`);
      }),
      { seed: SEED, numRuns: 25 },
    );
    expect(failures).toEqual([]);
  });

  it("never answers 5xx to raw paths that try to climb out of their route", async () => {
    for (const raw of [
      "/v1/capsules/%2e%2e/%2e%2e/versions/1.0.0/bundle",
      "/v1/projects/../admin/audit",
      "/v1/capsules/a/b/versions/%ff/sbom",
      "//v1//capsules",
      `/v1/capsules/${"a/".repeat(500)}`,
      `/v1/projects/${"a".repeat(64)}/artifacts/..%2f..%2f..%2fbundles`,
    ]) {
      const res = await api(raw.replace(BASE, ""), { token: adminToken });
      expect(res.status, raw).toBeLessThan(500);
    }
    // Malformed percent-escapes in an artefact path of a real project: refused as input, not a crash.
    for (const tail of ["%ff", "%", "a%zz", "%c3%28"]) {
      const res = await api(`/v1/projects/${projectId}/artifacts/${tail}`, { token: ownerToken });
      expect(res.status, tail).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("VALIDATION_FAILED");
    }
  });
});
