import autocannon from "autocannon";
import { Agent, fetch } from "undici";
import { makeCatalog, makeHandles, seededRandom } from "./catalog.mjs";
import { publishReviewer, publishWorker, signUpOne, twentyTaskGraph, WORKER_SOURCE } from "./kamachiq.mjs";
import { publishAll, signUp } from "./seed.mjs";
import { summarize } from "./stats.mjs";

/**
 * The mixed traffic of the load and soak benches: catalog search, capsule detail, install, project status and
 * event ingestion, each driven by its own autocannon instance with its share of the clients, so every request
 * type has its own latencies and error counts. Seeded through the real API.
 */

const PER_HANDLE = 10;
const SEARCHES = [
  "csv cleaner",
  "kubernetes",
  "terraform validator",
  "pull request review",
  "unit test generator",
  "changelog",
  "secret scanner",
  "sql",
  "markdown",
  "docker",
  "data validation",
  "json schema",
  "kuberntes",
  "changlog",
  "ci",
  "test&category=Testing",
  "scanner&pricing=free",
];
const searchPath = (q, limit) =>
  `/v1/capsules?q=${q.includes("&") ? q.replace(/^[^&]+/, encodeURIComponent) : encodeURIComponent(q)}&limit=${limit}`;

/** Shares of the clients per request type (they sum to 1). */
export const MIX = [
  { type: "search", share: 0.3 },
  { type: "detail", share: 0.3 },
  { type: "install", share: 0.1 },
  { type: "status", share: 0.15 },
  { type: "events", share: 0.15 },
];
export const EVENTS_PER_BATCH = 10;

/**
 * Seeds the platform through its API: `capsules` catalog capsules over accounts of PER_HANDLE each, `accounts`
 * client accounts (installs and event ingestion, each request round robin over them), the first-party
 * reviewer, one worker capsule and `projects` KAMACHIQ projects of 20 tasks under a few owners.
 */
export async function seedMix(base, root, { capsules = 300, accounts = 200, projects = 3, log = () => {} }) {
  const random = seededRandom(20261203);
  const handles = makeHandles(Math.ceil(capsules / PER_HANDLE) + accounts, random);
  const clientHandles = handles.splice(0, accounts);
  const catalog = makeCatalog(handles, capsules, PER_HANDLE, random);
  const keys = await signUp(base, [...handles, ...clientHandles], 8);
  const seed = await publishAll(base, catalog, keys, { concurrency: 8, deadline: Date.now() + 10 * 60_000 });
  log(`${seed.published} capsules published (${seed.failed.length} failed), ${keys.size} accounts`);
  if (seed.published === 0) throw new Error(`no capsule published: ${JSON.stringify(seed.failed[0])}`);

  const soma = await publishReviewer(base, root);
  const publisher = await signUpOne(base, "mix-publisher", "198.51.100.2");
  await publishWorker(base, publisher.apiKey, "mix-publisher/pyfile", WORKER_SOURCE);
  const owners = [];
  const projectIds = [];
  for (let i = 0; i < projects; i++) {
    const owner = await signUpOne(base, `mix-owner-${i}`, `198.51.100.${10 + i}`);
    owners.push(owner);
    const response = await fetch(`${base}/v1/projects`, {
      method: "POST",
      headers: { authorization: `Bearer ${owner.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        name: `mix-${i}`,
        spec: { tasks: twentyTaskGraph("mix-publisher/pyfile@^1") },
        budget: { tokens: 10_000_000 },
        maxParallelAgents: 5,
      }),
    });
    const body = await response.json();
    if (response.status !== 201) throw new Error(`project ${i}: ${response.status} ${JSON.stringify(body)}`);
    projectIds.push({ id: body.project.id, apiKey: owner.apiKey });
  }
  // Installable capsules: free, no permissions beyond what the installs accept.
  const installable = catalog.filter((c) => c.pricing.model === "free").map((c) => c.name);
  return {
    reviewer: soma.capsule,
    capsules: catalog.map((c) => c.name),
    installable,
    clientKeys: clientHandles.map((h) => keys.get(h)),
    projects: projectIds,
    published: seed.published,
  };
}

let eventSeq = 0;
/** One request of each type, as autocannon `setupRequest` functions (round robin over the seeded data). */
function requestsFor(type, seed, runLabel) {
  let n = 0;
  const key = () => seed.clientKeys[n % seed.clientKeys.length];
  switch (type) {
    case "search":
      return (request) => ({
        ...request,
        path: searchPath(SEARCHES[n % SEARCHES.length], 20 + (Math.floor(n++ / SEARCHES.length) % 31)),
      });
    case "detail":
      return (request) => ({ ...request, path: `/v1/capsules/${seed.capsules[n++ % seed.capsules.length]}` });
    case "install":
      return (request) => {
        const apiKey = key();
        const capsule = seed.installable[Math.floor(n++ / seed.clientKeys.length) % seed.installable.length];
        return {
          ...request,
          method: "POST",
          path: "/v1/installs",
          headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({
            capsule,
            range: "*",
            acceptPermissions: ["artifacts.read", "logging", "llm"],
          }),
        };
      };
    case "status":
      return (request) => {
        const project = seed.projects[n++ % seed.projects.length];
        return {
          ...request,
          path: `/v1/projects/${project.id}`,
          headers: { authorization: `Bearer ${project.apiKey}` },
        };
      };
    case "events":
      return (request) => {
        const apiKey = key();
        n++;
        const time = new Date().toISOString();
        const events = [];
        for (let i = 0; i < EVENTS_PER_BATCH; i++) {
          events.push({
            specversion: "1.0",
            id: `${runLabel}-${eventSeq++}`,
            source: "bench://load",
            type: "soma.usage.tokens",
            time,
            data: { inputTokens: 100 + (i % 50), outputTokens: 20 + (i % 30) },
          });
        }
        return {
          ...request,
          method: "POST",
          path: "/v1/events",
          headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
          body: JSON.stringify(events),
        };
      };
    default:
      throw new Error(`unknown request type ${type}`);
  }
}

/** Client counts per type for `clients` in all (at least one each). */
export function splitClients(clients) {
  const counts = MIX.map((m) => Math.max(1, Math.floor(clients * m.share)));
  counts[0] += Math.max(0, clients - counts.reduce((a, b) => a + b, 0));
  return Object.fromEntries(MIX.map((m, i) => [m.type, counts[i]]));
}

function runOne(base, options) {
  return options.thinkMs > 0 ? runPaced(base, options) : runClosedLoop(base, options);
}

/** Back to back: each connection sends its next request as soon as the answer arrives (autocannon). */
function runClosedLoop(base, { connections, seconds, setupRequest, timeoutSeconds }) {
  const latencies = [];
  const instance = autocannon({
    url: base,
    connections,
    duration: seconds,
    timeout: timeoutSeconds,
    requests: [{ method: "GET", setupRequest }],
  });
  instance.on("response", (_client, _status, _bytes, responseTime) => latencies.push(responseTime));
  return instance.then((result) => ({
    connections,
    requests: result.requests.total,
    reqPerSec: result.requests.total / (result.duration || seconds),
    ok: result["2xx"],
    non2xx: result.non2xx,
    timeouts: result.timeouts,
    connectionErrors: result.errors - result.timeouts,
    statusCodes: result.statusCodeStats,
    latency: summarize(latencies),
    latencies,
    seconds: result.duration || seconds,
  }));
}

/**
 * Paced clients: each of `connections` clients sends a request, reads the whole answer, then waits a think
 * time drawn uniformly from [thinkMs / 2, 3 * thinkMs / 2] before the next one (people reading a page, a
 * dashboard polling, an SDK flushing every few seconds), so the offered load follows from the client count
 * instead of from how fast the server answers. Clients start spread over one think time. Each keeps its own
 * keep-alive connection. Same result shape as the closed-loop run; `requests` counts answers.
 */
async function runPaced(base, { connections, seconds, setupRequest, timeoutSeconds, thinkMs }) {
  const latencies = [];
  const statusCodes = {};
  let ok = 0;
  let non2xx = 0;
  let timeouts = 0;
  let connectionErrors = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const think = () => thinkMs * (0.5 + Math.random());
  // One agent per client: undici pools by origin, and a client is one connection as with autocannon.
  const client = async () => {
    const agent = new Agent({ connections: 1, keepAliveTimeout: 60_000 });
    await sleep(Math.random() * thinkMs);
    while (performance.now() < deadline) {
      const request = setupRequest({ method: "GET", path: "/" });
      const sent = performance.now();
      try {
        const response = await fetch(`${base}${request.path}`, {
          method: request.method ?? "GET",
          headers: request.headers,
          body: request.body,
          dispatcher: agent,
          signal: AbortSignal.timeout(timeoutSeconds * 1000),
        });
        await response.arrayBuffer();
        latencies.push(performance.now() - sent);
        const code = String(response.status);
        statusCodes[code] = { count: (statusCodes[code]?.count ?? 0) + 1 };
        if (response.status >= 200 && response.status < 300) ok += 1;
        else non2xx += 1;
      } catch (error) {
        if (error?.name === "TimeoutError") timeouts += 1;
        else connectionErrors += 1;
      }
      const wait = Math.min(think(), deadline - performance.now());
      if (wait > 0) await sleep(wait);
    }
    await agent.close();
  };
  await Promise.all(Array.from({ length: connections }, client));
  const elapsed = (performance.now() - started) / 1000;
  return {
    connections,
    requests: latencies.length,
    reqPerSec: latencies.length / elapsed,
    ok,
    non2xx,
    timeouts,
    connectionErrors,
    statusCodes,
    latency: summarize(latencies),
    latencies,
    seconds: elapsed,
    thinkMs,
  };
}

/**
 * Drives the mix for `seconds` with `clients` connections split per MIX, all types at once.
 * @returns {Promise<{ byType: Record<string, object>, overall: object }>}
 */
export async function runMix(
  base,
  seed,
  { clients, seconds, timeoutSeconds = 10, thinkMs = 0, label = "load" },
) {
  const split = splitClients(clients);
  const runs = await Promise.all(
    MIX.map((m) =>
      runOne(base, {
        connections: split[m.type],
        seconds,
        timeoutSeconds,
        thinkMs,
        setupRequest: requestsFor(m.type, seed, `${label}-${Date.now()}`),
      }),
    ),
  );
  const byType = Object.fromEntries(MIX.map((m, i) => [m.type, runs[i]]));
  return { byType, overall: combine(runs) };
}

/** The runs of several instances as one. */
export function combine(runs) {
  const sum = (k) => runs.reduce((n, r) => n + r[k], 0);
  const statusCodes = {};
  for (const r of runs) {
    for (const [code, { count }] of Object.entries(r.statusCodes ?? {})) {
      statusCodes[code] = { count: (statusCodes[code]?.count ?? 0) + count };
    }
  }
  return {
    connections: sum("connections"),
    requests: sum("requests"),
    reqPerSec: sum("reqPerSec"),
    ok: sum("ok"),
    non2xx: sum("non2xx"),
    timeouts: sum("timeouts"),
    connectionErrors: sum("connectionErrors"),
    statusCodes,
    latency: summarize(runs.flatMap((r) => r.latencies)),
    latencies: runs.flatMap((r) => r.latencies),
  };
}

/** The bare health route with `clients` connections, as the baseline of the same run. */
export function runHealth(base, { clients, seconds, timeoutSeconds = 10, thinkMs = 0 }) {
  return runOne(base, {
    connections: clients,
    seconds,
    timeoutSeconds,
    thinkMs,
    setupRequest: (request) => ({ ...request, path: "/healthz" }),
  });
}
