#!/usr/bin/env node
// Smoke checks after a deploy (docs/deploy.md), against any running platform:
//   node scripts/smoke.mjs --url https://<worker> [--token <METRICS_TOKEN or admin token>]
// The token may also come from METRICS_TOKEN or SOMA_ADMIN_TOKEN. Prints one line per check and exits 1 if any
// failed. Reads only: it creates no accounts and changes no state, so it is safe against production.
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const TIMEOUT_MS = 15_000;

/** @param {string} base @param {string} token */
function checks(base, token) {
  const traceId = randomBytes(16).toString("hex");
  const traceparent = `00-${traceId}-${randomBytes(8).toString("hex")}-01`;
  /** @type {[string, () => Promise<string | null>][]} */
  return [
    [
      "GET /healthz answers 200 with ok: true (D1, R2 and queues reachable)",
      async () => {
        const res = await get(`${base}/healthz`);
        const body = await res.json().catch(() => null);
        return res.status === 200 && body?.ok === true ? null : `${res.status} ${JSON.stringify(body)}`;
      },
    ],
    [
      "the response continues the caller's traceparent and carries a request id",
      async () => {
        const res = await get(`${base}/healthz`, { traceparent });
        const echoed = res.headers.get("traceparent") ?? "";
        if (!echoed.startsWith(`00-${traceId}-`)) return `traceparent was ${echoed || "missing"}`;
        return res.headers.get("x-request-id") ? null : "no X-Request-Id";
      },
    ],
    [
      "GET /.well-known/jwks.json publishes at least one signing key",
      async () => {
        const res = await get(`${base}/.well-known/jwks.json`);
        const body = await res.json().catch(() => null);
        return res.status === 200 && Array.isArray(body?.keys) && body.keys.length > 0
          ? null
          : `${res.status}`;
      },
    ],
    [
      "GET /v1/capsules answers from D1",
      async () => {
        const res = await get(`${base}/v1/capsules?limit=1`);
        return res.status === 200 ? null : `${res.status} ${(await res.text()).slice(0, 200)}`;
      },
    ],
    [
      "GET / serves the web app",
      async () => {
        const res = await get(`${base}/`);
        const type = res.headers.get("content-type") ?? "";
        return res.status === 200 && type.includes("text/html") ? null : `${res.status} ${type}`;
      },
    ],
    [
      "GET /metrics refuses a request without the token",
      async () => {
        const res = await get(`${base}/metrics`);
        return res.status === 401 ? null : `${res.status}`;
      },
    ],
    [
      "GET /metrics answers Prometheus text with the token",
      async () => {
        if (!token) return "no token given (--token, METRICS_TOKEN or SOMA_ADMIN_TOKEN)";
        const res = await get(`${base}/metrics`, { authorization: `Bearer ${token}` });
        const text = await res.text();
        if (res.status !== 200) return `${res.status} ${text.slice(0, 200)}`;
        return text.includes("# TYPE http_requests_total counter") ? null : "no http_requests_total";
      },
    ],
  ];
}

/** @param {string} url @param {Record<string, string>} [headers] */
function get(url, headers = {}) {
  return fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS), redirect: "manual" });
}

/**
 * Runs every check and reports each; resolves to the number that failed.
 * @param {{ url: string; token?: string; log?: (line: string) => void }} options
 */
export async function smoke({ url, token = "", log = console.log }) {
  const base = url.replace(/\/+$/, "");
  let failed = 0;
  for (const [name, check] of checks(base, token)) {
    let problem;
    try {
      problem = await check();
    } catch (error) {
      problem = error instanceof Error ? error.message : String(error);
    }
    if (problem) failed++;
    log(`${problem ? "FAIL" : "ok  "} ${name}${problem ? `: ${problem}` : ""}`);
  }
  return failed;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { values } = parseArgs({ options: { url: { type: "string" }, token: { type: "string" } } });
  const url = values.url || process.env.SOMA_URL;
  if (!url) {
    console.error("usage: node scripts/smoke.mjs --url <base URL> [--token <METRICS_TOKEN>]");
    process.exit(2);
  }
  const token = values.token || process.env.METRICS_TOKEN || process.env.SOMA_ADMIN_TOKEN || "";
  const failed = await smoke({ url, token });
  console.log(failed === 0 ? `all checks passed against ${url}` : `${failed} check(s) failed against ${url}`);
  process.exit(failed === 0 ? 0 : 1);
}
