import autocannon from "autocannon";
import { summarize } from "./stats.mjs";

/**
 * Drives one route with autocannon for `seconds` at `connections` clients, each request taking the next
 * path of `paths` (round robin across all clients). Latencies are collected per response so p95 is exact
 * (autocannon itself reports p97.5, not p95).
 */
export async function loadRoute(baseUrl, { paths, connections, seconds, headers = {} }) {
  let next = 0;
  const latencies = [];
  const instance = autocannon({
    url: baseUrl,
    connections,
    duration: seconds,
    headers,
    requests: [
      {
        method: "GET",
        setupRequest: (request) => ({ ...request, path: paths[next++ % paths.length] }),
      },
    ],
  });
  instance.on("response", (_client, _status, _bytes, responseTime) => latencies.push(responseTime));
  const result = await instance;
  const nonOk = result.non2xx;
  return {
    connections,
    seconds,
    requests: result.requests.total,
    reqPerSec: result.requests.total / (result.duration || seconds),
    errors: result.errors + result.timeouts,
    non2xx: nonOk,
    statusCodes: result.statusCodeStats,
    latency: summarize(latencies),
  };
}

/**
 * Sends `count` requests one after another (no overlap) and times each from the client: the latency of a
 * single caller on an otherwise idle server.
 */
export async function sequential(count, send) {
  const latencies = [];
  let failures = 0;
  let lastFailure = null;
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const response = await send(i);
    const body = await response.text();
    latencies.push(performance.now() - started);
    if (!response.ok) {
      failures++;
      lastFailure = `${response.status} ${body.slice(0, 300)}`;
    }
  }
  return { ...summarize(latencies), failures, lastFailure };
}
